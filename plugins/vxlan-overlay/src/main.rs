//! vxlan-overlay: parse, dispatch. The work is in the library.

fn main() {
    cni::skel::run(vxlan_overlay::VxlanOverlay)
}
