//! gwbridge-egress: dispatch only. The work is in the library.

fn main() {
    cni::skel::run(gwbridge_egress::GwbridgeEgress)
}
