//! The pure part of `network create` (overlayctl's, and the Docker driver's for a network made in
//! Docker): what it is given, the record it makes of that, and the choice of a free VNI. The
//! store's `networks` runs it against etcd.

use std::collections::BTreeSet;

use crate::addressing::Addressing;
use crate::error::Error;
use crate::records::Network;
use crate::types::{check_network_name, FIRST_AUTO_VNI, MAX_VNI};
use crate::{Mtu, Vni};

/// What `network create` is given, as text: whatever is wrong with a value, it gets the model's
/// one-line refusal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkRequest {
    pub name: String,
    /// In CIDR form; at most one IPv4 and one IPv6.
    pub subnets: Vec<String>,
    /// At most one per subnet; a subnet without one gets its first address.
    pub gateways: Vec<String>,
    pub ip_range: Option<String>,
    /// None: the lowest free one from [`FIRST_AUTO_VNI`] up.
    pub vni: Option<String>,
    pub mtu: Option<String>,
    pub internal: bool,
    pub host_access: bool,
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedNetwork {
    /// The record to write; its VNI is [`Vni::FIRST_AUTO`] until one is chosen, unless given.
    pub record: Network,
    /// The VNI was given: it is that one or none.
    pub vni_given: bool,
}

impl NetworkRequest {
    /// Checks everything before the first request, so that a refused create writes nothing.
    /// `created` is the record's creation time (Unix seconds).
    pub fn plan(&self, created: u64) -> Result<PlannedNetwork, Error> {
        check_network_name(&self.name)?;
        let addressing = Addressing::plan(&self.subnets, &self.gateways, self.ip_range.as_deref())?;
        let vni = self.vni.as_deref().map(Vni::parse).transpose()?;
        let mtu = self.mtu.as_deref().map(Mtu::parse).transpose()?;
        Ok(PlannedNetwork {
            record: Network {
                name: self.name.clone(),
                vni: vni.unwrap_or(Vni::FIRST_AUTO),
                subnets: addressing.subnets.clone(),
                gateways: addressing.record_gateways(),
                ip_range: addressing.ip_range,
                mtu,
                internal: self.internal,
                host_access: self.host_access,
                created,
            },
            vni_given: vni.is_some(),
        })
    }
}

/// The `skip`-th lowest free VNI from [`FIRST_AUTO_VNI`] (the last free one if there are fewer).
pub fn pick_vni(taken: &BTreeSet<u32>, skip: u32) -> Option<u32> {
    (FIRST_AUTO_VNI..=MAX_VNI)
        .filter(|v| !taken.contains(v))
        .take(skip as usize + 1)
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_vni_or_a_later_one() {
        let taken: BTreeSet<u32> = [4096, 4097, 4099].into_iter().collect();
        assert_eq!(pick_vni(&taken, 0), Some(4098));
        assert_eq!(pick_vni(&taken, 1), Some(4100));
        assert_eq!(pick_vni(&BTreeSet::new(), 0), Some(FIRST_AUTO_VNI));
    }

    #[test]
    fn a_plan_is_the_record_with_its_defaults() {
        let request = NetworkRequest {
            name: "demo".into(),
            subnets: vec!["10.0.0.0/24".into()],
            ..NetworkRequest::default()
        };
        let planned = request.plan(7).unwrap();
        assert!(!planned.vni_given);
        assert_eq!(planned.record.vni, Vni::FIRST_AUTO);
        assert_eq!(
            planned.record.gateways,
            vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(planned.record.created, 7);
        let given = NetworkRequest {
            vni: Some("42".into()),
            ..request.clone()
        };
        let planned = given.plan(7).unwrap();
        assert!(planned.vni_given);
        assert_eq!(planned.record.vni.get(), 42);
    }

    #[test]
    fn a_bad_value_is_refused_before_anything_is_written() {
        let bad_name = NetworkRequest {
            name: "-x".into(),
            subnets: vec!["10.0.0.0/24".into()],
            ..NetworkRequest::default()
        };
        assert!(matches!(bad_name.plan(0), Err(Error::Invalid(_))));
        let bad_mtu = NetworkRequest {
            name: "x".into(),
            mtu: Some("9".into()),
            ..bad_name.clone()
        };
        assert!(matches!(bad_mtu.plan(0), Err(Error::Invalid(_))));
    }
}
