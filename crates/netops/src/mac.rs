//! Interface names as the kernel takes them, and MACs in messages. (The names the plugins give
//! their devices, and MACs as values, are the model crate's.)

/// "aa:bb:cc:dd:ee:ff", lower case: MACs in error messages.
pub(crate) fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// The kernel's dev_valid_name(): 1-15 bytes, not "." or "..", no '/', ':' or whitespace.
pub(crate) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= cni::env::MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_name_rules() {
        assert!(valid_ifname("eth0"));
        assert!(valid_ifname("abcdefghijklmno"));
        for bad in [
            "",
            ".",
            "..",
            "abcdefghijklmnop",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
        ] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
    }
}
