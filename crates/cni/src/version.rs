//! CNI specification versions.

use std::fmt;

use crate::error::{codes, CniError};

/// The versions every plugin of the suite speaks, oldest first.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A supported specification version. Ordered, so `v >= Version::V0_4_0` reads as the spec does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    pub const LATEST: Version = Version::V1_1_0;

    /// Parses a `cniVersion`; anything this suite does not speak is code 1.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "0.3.0" => Version::V0_3_0,
            "0.3.1" => Version::V0_3_1,
            "0.4.0" => Version::V0_4_0,
            "1.0.0" => Version::V1_0_0,
            "1.1.0" => Version::V1_1_0,
            other => {
                return Err(CniError::new(
                    codes::INCOMPATIBLE_VERSION,
                    format!("incompatible CNI version {other:?}"),
                )
                .with_details(format!("supported versions: {}", SUPPORTED.join(", "))))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        SUPPORTED[self as usize]
    }

    /// CHECK exists from 0.4.0 on.
    pub fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// GC and STATUS exist from 1.1.0 on.
    pub fn has_gc_and_status(self) -> bool {
        self >= Version::V1_1_0
    }

    /// `ips[].version` was dropped in 1.0.0.
    pub fn has_ip_version_field(self) -> bool {
        self < Version::V1_0_0
    }

    /// Interface `mtu`/`socketPath`/`pciID` and route `mtu`/`advmss`/`priority`/`table`/`scope`.
    pub fn has_v1_1_fields(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_supported_version() {
        for s in SUPPORTED {
            assert_eq!(Version::parse(s).unwrap().as_str(), *s);
        }
    }

    #[test]
    fn refuses_unknown_versions_with_code_1() {
        for s in ["0.1.0", "0.2.0", "1.2.0", "", "one", "1.0"] {
            assert_eq!(Version::parse(s).unwrap_err().code, 1, "{s:?}");
        }
    }

    #[test]
    fn verbs_and_fields_follow_the_spec() {
        assert!(!Version::V0_3_1.has_check());
        assert!(Version::V0_4_0.has_check());
        assert!(!Version::V1_0_0.has_gc_and_status());
        assert!(Version::V1_1_0.has_gc_and_status());
        assert!(Version::V0_4_0.has_ip_version_field());
        assert!(!Version::V1_0_0.has_ip_version_field());
    }
}
