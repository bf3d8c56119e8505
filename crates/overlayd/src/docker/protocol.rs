//! The messages of Docker's legacy plugin protocol for network and IPAM drivers (libnetwork's
//! `drivers/remote` and `ipams/remote`) and for authorization plugins (moby's
//! `pkg/authorization`): JSON over HTTP POST, field names as Docker spells them.
//! Pure: no I/O. Only the fields this driver reads or writes are declared; serde skips the rest.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// What every answer is sent as (the plugin helpers' media type).
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Option key of an IPAM `RequestAddress` that asks for the network's gateway.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_TYPE: &str = "com.docker.network.gateway";
/// Where `RequestPool`'s answer gives the gateway.
pub const GATEWAY_DATA: &str = "com.docker.network.gateway";

#[derive(Serialize)]
pub struct Activate {
    #[serde(rename = "Implements")]
    pub implements: Vec<&'static str>,
}

#[derive(Serialize)]
pub struct NetworkCapabilities {
    #[serde(rename = "Scope")]
    pub scope: &'static str,
    #[serde(rename = "ConnectivityScope")]
    pub connectivity_scope: &'static str,
}

#[derive(Serialize)]
pub struct IpamCapabilities {
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
}

#[derive(Serialize)]
pub struct AddressSpaces {
    #[serde(rename = "LocalDefaultAddressSpace")]
    pub local: &'static str,
    #[serde(rename = "GlobalDefaultAddressSpace")]
    pub global: &'static str,
}

#[derive(Deserialize, Debug)]
pub struct RequestPool {
    #[serde(rename = "Pool", default)]
    pub pool: String,
    #[serde(rename = "SubPool", default)]
    pub sub_pool: String,
    #[serde(rename = "V6", default)]
    pub v6: bool,
}

#[derive(Serialize)]
pub struct PoolGranted {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Pool")]
    pub pool: String,
    #[serde(rename = "Data")]
    pub data: HashMap<String, String>,
}

#[derive(Deserialize, Debug)]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Options", default)]
    pub options: Option<HashMap<String, String>>,
}

#[derive(Serialize)]
pub struct AddressGranted {
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Data")]
    pub data: HashMap<String, String>,
}

#[derive(Deserialize, Debug)]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Address")]
    pub address: String,
}

#[derive(Deserialize, Debug)]
pub struct IpamData {
    #[serde(rename = "Pool")]
    pub pool: String,
    #[serde(rename = "Gateway", default)]
    pub gateway: String,
}

#[derive(Deserialize, Debug)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "IPv4Data", default)]
    pub ipv4: Vec<IpamData>,
    #[serde(rename = "IPv6Data", default)]
    pub ipv6: Option<Vec<IpamData>>,
}

#[derive(Deserialize, Debug)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Deserialize, Debug, Default)]
pub struct EndpointInterface {
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "MacAddress", default)]
    pub mac_address: String,
}

#[derive(Deserialize, Debug)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", default)]
    pub interface: Option<EndpointInterface>,
}

#[derive(Serialize)]
pub struct EndpointCreated {
    #[serde(rename = "Interface")]
    pub interface: HashMap<&'static str, String>,
}

/// DeleteEndpoint, Leave, EndpointOperInfo.
#[derive(Deserialize, Debug)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Deserialize, Debug)]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "SandboxKey", default)]
    pub sandbox_key: String,
}

#[derive(Serialize)]
pub struct InterfaceName {
    #[serde(rename = "SrcName")]
    pub src_name: String,
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: &'static str,
}

/// No `Gateway` and no default route: libnetwork then joins the container to `docker_gwbridge`
/// as well, which gives it egress (NAT) and `-p` through the host, as Docker's own overlay does.
#[derive(Serialize)]
pub struct Joined {
    #[serde(rename = "InterfaceName")]
    pub interface_name: InterfaceName,
}

#[derive(Serialize)]
pub struct OperInfo {
    #[serde(rename = "Value")]
    pub value: HashMap<String, String>,
}

#[derive(Serialize)]
pub struct Failure {
    #[serde(rename = "Err")]
    pub err: String,
}

/// What `Plugin.Activate` lists for an authorization plugin (dockerd's `--authorization-plugin`
/// looks the plugin up by name and wants this exact string).
pub const AUTHZ_IMPLEMENTS: &str = "authz";
/// The two calls of an authorization plugin: before dockerd handles a request, and after.
pub const AUTHZ_REQUEST: &str = "AuthZPlugin.AuthZReq";
pub const AUTHZ_RESPONSE: &str = "AuthZPlugin.AuthZRes";

/// `AuthZPlugin.AuthZReq`: the API request dockerd is about to handle. The body (base64), headers
/// and user are there too; the decision needs only the method and the URI.
#[derive(Deserialize, Debug)]
pub struct AuthzRequest {
    #[serde(rename = "RequestMethod")]
    pub method: String,
    /// As the client sent it: `/v1.41/networks/demo`, the version prefix optional, a query allowed.
    /// Spelt `RequestUri` on the wire (moby's JSON tag; Go's decoder ignores case, serde does not).
    #[serde(rename = "RequestUri")]
    pub uri: String,
}

/// The answer to both calls. `Msg` is what the client sees after
/// `authorization denied by plugin NAME: `; a non-empty `Err` would fail the request as a plugin
/// error, so it is never sent.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct AuthzAnswer {
    #[serde(rename = "Allow")]
    pub allow: bool,
    #[serde(rename = "Msg", skip_serializing_if = "String::is_empty")]
    pub msg: String,
}

impl AuthzAnswer {
    pub fn allow() -> AuthzAnswer {
        AuthzAnswer {
            allow: true,
            msg: String::new(),
        }
    }

    pub fn deny(msg: String) -> AuthzAnswer {
        AuthzAnswer { allow: false, msg }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_request_as_libnetwork_sends_it() {
        let j: Join = serde_json::from_str(
            r#"{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"/var/run/docker/netns/abc","Options":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(j.endpoint_id, "e1");
        assert_eq!(j.sandbox_key, "/var/run/docker/netns/abc");
    }

    #[test]
    fn create_network_without_ipv6_data() {
        let c: CreateNetwork = serde_json::from_str(
            r#"{"NetworkID":"n","Options":{},"IPv4Data":[{"AddressSpace":"a","Pool":"10.0.0.0/24","Gateway":"10.0.0.1/24"}],"IPv6Data":null}"#,
        )
        .unwrap();
        assert_eq!(c.ipv4[0].pool, "10.0.0.0/24");
        assert!(c.ipv6.is_none());
    }

    #[test]
    fn joined_has_no_gateway_field() {
        let text = serde_json::to_string(&Joined {
            interface_name: InterfaceName {
                src_name: "dk0".into(),
                dst_prefix: "eth",
            },
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"InterfaceName":{"SrcName":"dk0","DstPrefix":"eth"}}"#
        );
    }

    #[test]
    fn authz_request_as_dockerd_sends_it() {
        let r: AuthzRequest = serde_json::from_str(
            r#"{"User":"","UserAuthNMethod":"","RequestMethod":"DELETE","RequestUri":"/v1.41/networks/demo","RequestBody":null,"RequestHeaders":{"User-Agent":"Docker-Client/20.10.24"},"RequestPeerCertificates":null}"#,
        )
        .unwrap();
        assert_eq!(
            (r.method.as_str(), r.uri.as_str()),
            ("DELETE", "/v1.41/networks/demo")
        );
    }

    #[test]
    fn authz_answers() {
        assert_eq!(
            serde_json::to_string(&AuthzAnswer::allow()).unwrap(),
            r#"{"Allow":true}"#
        );
        assert_eq!(
            serde_json::to_string(&AuthzAnswer::deny("no".into())).unwrap(),
            r#"{"Allow":false,"Msg":"no"}"#
        );
    }
}
