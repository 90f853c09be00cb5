//! A network request (CLI flags or a CNI configuration) validated into a `NetworkSpec`.

use super::*;

/// One subnet of a network with its gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetSpec {
    pub cidr: IpNet,
    pub gateway: IpAddr,
    /// host-local's rangeStart / rangeEnd: the part of the subnet handed out.
    #[serde(default)]
    pub range_start: Option<IpAddr>,
    #[serde(default)]
    pub range_end: Option<IpAddr>,
}

/// A route inside the sandbox (CNI ipam.routes); no gateway means the subnet's gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// A `network create` request as typed by the user (CLI flags or CNI config).
#[derive(Debug, Clone, Copy)]
pub struct NetworkRequest<'a> {
    pub name: &'a str,
    pub driver: Driver,
    pub bridge: Option<&'a str>,
    pub subnets: &'a [String],
    pub gateways: &'a [String],
    pub internal: bool,
    pub masquerade: bool,
    pub mtu: Option<u32>,
}

/// A validated `network create` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    pub driver: Driver,
    /// None: knit picks `knbr<id>`.
    pub bridge: Option<String>,
    pub subnets: Vec<SubnetSpec>,
    pub internal: bool,
    pub masquerade: bool,
    pub mtu: Option<u32>,
    /// The bridge carries the gateway address(es) (CNI `isGateway`; always for the CLI).
    pub bridge_gateway: bool,
    /// CNI `promiscMode`.
    pub promisc: bool,
    /// Serve DNS on this network's gateway addresses (`knit daemon`).
    pub dns: bool,
    /// Names also resolve as NAME.DOMAIN; sandboxes get it as their search domain.
    pub dns_domain: Option<String>,
}

impl NetworkSpec {
    /// DNS settings: whether knit's DNS serves the network, and the domain its names
    /// also resolve under (`NAME.DOMAIN`; stored lowercase without the trailing dot).
    pub fn with_dns(&mut self, on: bool, domain: Option<&str>) -> Result<&mut Self> {
        self.dns = on;
        if let Some(d) = domain {
            validate_dns_name("--dns-domain", d)?;
            self.dns_domain = Some(d.trim_end_matches('.').to_ascii_lowercase());
        }
        Ok(self)
    }

    /// Validates raw CLI/CNI input. `gateways` may name one gateway per subnet.
    pub fn new(r: &NetworkRequest) -> Result<Self> {
        let NetworkRequest {
            name,
            driver,
            bridge,
            subnets,
            gateways,
            internal,
            masquerade,
            mtu,
        } = *r;
        validate_name("network name", name)?;
        if let Some(b) = bridge {
            validate_bridge_name("--bridge", b)?;
            if driver == Driver::Ptp {
                return Err(Error::invalid(
                    "--bridge",
                    b,
                    "the ptp driver has no bridge",
                ));
            }
        }
        if subnets.is_empty() {
            return Err(Error::invalid(
                "--subnet",
                "",
                "at least one subnet is required",
            ));
        }
        let mut nets = Vec::new();
        for s in subnets {
            let net = parse_subnet("--subnet", s)?;
            if let Some(other) = nets
                .iter()
                .find(|o: &&IpNet| o.contains(&net.network()) || net.contains(&o.network()))
            {
                return Err(Error::invalid(
                    "--subnet",
                    s,
                    format!("overlaps {other} of the same network"),
                ));
            }
            nets.push(net);
        }
        let mut gws: Vec<Option<IpAddr>> = vec![None; nets.len()];
        for g in gateways {
            let ip = parse_ip("--gateway", g)?;
            let idx = nets.iter().position(|n| n.contains(&ip)).ok_or_else(|| {
                Error::invalid("--gateway", g, "is not inside any of the network's subnets")
            })?;
            check_host_in("--gateway", ip, &nets[idx])?;
            if gws[idx].replace(ip).is_some() {
                return Err(Error::invalid(
                    "--gateway",
                    g,
                    format!("subnet {} already has a gateway", nets[idx]),
                ));
            }
        }
        if let Some(m) = mtu {
            check_mtu("--mtu", m, &nets)?;
        }
        let subnets = nets
            .into_iter()
            .zip(gws)
            .map(|(cidr, gw)| SubnetSpec {
                gateway: gw.unwrap_or_else(|| default_gateway(&cidr)),
                cidr,
                range_start: None,
                range_end: None,
            })
            .collect();
        Ok(NetworkSpec {
            name: name.to_string(),
            driver,
            bridge: bridge.map(str::to_string),
            subnets,
            internal,
            masquerade: masquerade && !internal,
            mtu,
            bridge_gateway: true,
            promisc: false,
            dns: true,
            dns_domain: None,
        })
    }
}
