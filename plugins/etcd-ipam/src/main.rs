//! etcd-ipam: parse, dispatch. The work is in the library.

fn main() {
    cni::skel::run(etcd_ipam::EtcdIpam)
}
