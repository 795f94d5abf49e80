//! An inclusive IPv4 address range as users write a load-balancer pool: a range
//! `192.168.0.170-192.168.0.175`, a CIDR `192.168.0.176/30`, or one address. Written back
//! in the form MetalLB's `IPAddressPool.spec.addresses` accepts (`first-last`, or `a/32`).

use crate::yaml::{Scalar, serde_as_text};
use ipnet::Ipv4Net;
use std::fmt;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRange {
    first: Ipv4Addr,
    last: Ipv4Addr,
}

impl AddressRange {
    pub fn first(&self) -> Ipv4Addr {
        self.first
    }

    pub fn last(&self) -> Ipv4Addr {
        self.last
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    pub fn overlaps(&self, other: &AddressRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// Whether every address of the range lies in `net` (network and broadcast included:
    /// the caller checks those separately, with its own message).
    pub fn within(&self, net: &Ipv4Net) -> bool {
        net.contains(&self.first) && net.contains(&self.last)
    }

    /// How many addresses it holds (at most 2^32, hence u64).
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    /// Never true (a range holds at least its first address); for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Scalar for AddressRange {
    fn parse_scalar(text: &str) -> Result<Self, String> {
        let form = "an address range like 192.168.0.170-192.168.0.175, a CIDR like 192.168.0.176/30, or one address";
        if let Some((a, b)) = text.split_once('-') {
            let (Ok(first), Ok(last)) = (a.trim().parse(), b.trim().parse()) else {
                return Err(format!("`{text}` is not {form}"));
            };
            if first > last {
                return Err(format!(
                    "`{text}` runs backwards: {first} comes after {last}"
                ));
            }
            return Ok(AddressRange { first, last });
        }
        if text.contains('/') {
            let net: Ipv4Net = text
                .parse()
                .map_err(|_| format!("`{text}` is not {form}"))?;
            if net.network() != net.addr() {
                return Err(format!(
                    "`{text}` has host bits set; the network is {}",
                    net.trunc()
                ));
            }
            return Ok(AddressRange {
                first: net.network(),
                last: net.broadcast(),
            });
        }
        let ip: Ipv4Addr = text
            .parse()
            .map_err(|_| format!("`{text}` is not {form}"))?;
        Ok(AddressRange {
            first: ip,
            last: ip,
        })
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}/32", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

serde_as_text!(AddressRange);

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> AddressRange {
        AddressRange::parse_scalar(s).unwrap()
    }

    #[test]
    fn the_three_forms_parse_and_print_as_metallb_reads_them() {
        assert_eq!(r("192.168.0.170-192.168.0.175").len(), 6);
        assert_eq!(
            r("192.168.0.170 - 192.168.0.175").to_string(),
            "192.168.0.170-192.168.0.175"
        );
        assert_eq!(r("10.0.0.8/30").to_string(), "10.0.0.8-10.0.0.11");
        assert_eq!(r("10.0.0.9").to_string(), "10.0.0.9/32");
        // What it prints parses back to itself.
        for s in ["10.0.0.1-10.0.0.4", "10.0.0.9/32", "10.0.0.0/24"] {
            assert_eq!(r(&r(s).to_string()), r(s));
        }
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        let e = AddressRange::parse_scalar("10.0.0.9-10.0.0.1").unwrap_err();
        assert!(e.contains("backwards"), "{e}");
        let e = AddressRange::parse_scalar("10.0.0.9/30").unwrap_err();
        assert!(e.contains("host bits") && e.contains("10.0.0.8/30"), "{e}");
        let e = AddressRange::parse_scalar("ten").unwrap_err();
        assert!(e.contains("address range"), "{e}");
    }

    #[test]
    fn overlap_and_containment() {
        let a = r("10.0.0.10-10.0.0.20");
        assert!(a.overlaps(&r("10.0.0.20-10.0.0.30")));
        assert!(!a.overlaps(&r("10.0.0.21-10.0.0.30")));
        assert!(a.contains("10.0.0.15".parse().unwrap()));
        assert!(a.within(&"10.0.0.0/24".parse().unwrap()));
        assert!(!r("10.0.0.250-10.0.1.5").within(&"10.0.0.0/24".parse().unwrap()));
    }
}
