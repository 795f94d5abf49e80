//! Validated newtypes: a value of one of these types is known good past the parser.

use crate::yaml::Scalar;
use std::fmt;

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// A known-good literal, used as the default for a field; also stands in for
            /// a value that failed to parse (already reported) so later checks still run.
            #[allow(dead_code, reason = "not every newtype has a default")]
            pub(crate) fn placeholder(text: &str) -> $name {
                $name(text.to_string())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        crate::yaml::serde_as_text!($name);
    };
}

text_newtype!(
    /// An RFC 1123 DNS label: lowercase letters, digits and `-`, 1–63 characters,
    /// starting and ending with a letter or digit. Used for cluster and node names.
    NodeName
);

impl Scalar for NodeName {
    fn parse_scalar(text: &str) -> Result<Self, String> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if text.is_empty() || text.len() > 63 {
            return Err(format!(
                "`{text}` must be 1 to 63 characters long to be a host name"
            ));
        }
        if !text.chars().all(ok_char) {
            return Err(format!(
                "`{text}` is not a valid host name: use lowercase letters, digits and `-`"
            ));
        }
        if text.starts_with('-') || text.ends_with('-') {
            return Err(format!("`{text}` must not start or end with `-`"));
        }
        Ok(NodeName(text.to_string()))
    }
}

text_newtype!(
    /// A Linux network interface name (1–15 bytes, no `/`, no white space).
    InterfaceName
);

impl Scalar for InterfaceName {
    fn parse_scalar(text: &str) -> Result<Self, String> {
        let bad = text.is_empty()
            || text.len() > 15
            || text
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace())
            || text == "."
            || text == "..";
        if bad {
            return Err(format!(
                "`{text}` is not a network interface name (1 to 15 characters, no `/`, `:` or spaces)"
            ));
        }
        Ok(InterfaceName(text.to_string()))
    }
}

text_newtype!(
    /// A SHA-256 digest as 64 lowercase hex digits.
    Sha256Hex
);

impl Scalar for Sha256Hex {
    fn parse_scalar(text: &str) -> Result<Self, String> {
        let t = text.strip_prefix("sha256:").unwrap_or(text);
        if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(Sha256Hex(t.to_ascii_lowercase()))
        } else {
            Err(format!("`{text}` is not a SHA-256 digest (64 hex digits)"))
        }
    }
}

text_newtype!(
    /// An absolute http(s) URL with a host; enough checking to catch typos, not a full parser.
    HttpUrl
);

impl HttpUrl {
    /// The `host[:port]` part.
    pub fn authority(&self) -> &str {
        let rest = self.0.split_once("://").map(|(_, r)| r).unwrap_or(&self.0);
        rest.split('/').next().unwrap_or(rest)
    }

    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }
}

impl Scalar for HttpUrl {
    fn parse_scalar(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .ok_or_else(|| format!("`{text}` is not an http:// or https:// URL"))?;
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() || text.chars().any(char::is_whitespace) {
            return Err(format!("`{text}` has no host"));
        }
        if let Some((_, port)) = authority.rsplit_once(':')
            && !authority.ends_with(']')
            && port.parse::<u16>().is_err()
        {
            return Err(format!("`{text}` has a bad port `{port}`"));
        }
        Ok(HttpUrl(text.trim_end_matches('/').to_string()))
    }
}

/// An Ethernet MAC address, unicast. Written as `aa:bb:cc:dd:ee:ff` (lowercase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A stable, locally administered address from an OUI and a seed string.
    pub fn derived(oui: [u8; 3], seed: &str) -> Mac {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(seed.as_bytes());
        Mac([oui[0], oui[1], oui[2], d[0], d[1], d[2]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Scalar for Mac {
    fn parse_scalar(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split([':', '-']).collect();
        let bad = || {
            format!("`{text}` is not a MAC address like \"52:54:00:12:34:56\" (quote it in YAML)")
        };
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(bad());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if out[0] & 1 == 1 {
            return Err(format!(
                "`{text}` is a multicast MAC address; a NIC needs a unicast one"
            ));
        }
        Ok(Mac(out))
    }
}

crate::yaml::serde_as_text!(Mac);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        assert!(NodeName::parse_scalar("stage-cp-1").is_ok());
        assert!(NodeName::parse_scalar("Stage").is_err());
        assert!(NodeName::parse_scalar("-a").is_err());
        assert!(NodeName::parse_scalar("a_b").is_err());
        assert!(NodeName::parse_scalar(&"a".repeat(64)).is_err());
    }

    #[test]
    fn macs() {
        let m = Mac::parse_scalar("BC:24:11:66:6F:07").unwrap();
        assert_eq!(m.to_string(), "bc:24:11:66:6f:07");
        assert!(Mac::parse_scalar("01:00:5e:00:00:01").is_err(), "multicast");
        assert!(Mac::parse_scalar("bc:24:11:66:6f").is_err());
        assert!(Mac::parse_scalar("zz:24:11:66:6f:07").is_err());
        // An unquoted MAC in YAML 1.1 may arrive as a sexagesimal integer: refuse it.
        assert!(Mac::parse_scalar("190523130047").is_err());
    }

    #[test]
    fn urls() {
        let u = HttpUrl::parse_scalar("https://10.0.0.2:7443/").unwrap();
        assert_eq!(u.as_str(), "https://10.0.0.2:7443");
        assert_eq!(u.authority(), "10.0.0.2:7443");
        assert!(HttpUrl::parse_scalar("ftp://x").is_err());
        assert!(HttpUrl::parse_scalar("https://x:99999").is_err());
        assert!(HttpUrl::parse_scalar("https://").is_err());
    }

    #[test]
    fn sha256() {
        assert!(Sha256Hex::parse_scalar(&"A".repeat(64)).is_ok());
        assert!(Sha256Hex::parse_scalar("abc").is_err());
    }
}
