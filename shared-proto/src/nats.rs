//! The NATS servers both services connect to: `NATS_URL`, one URL or a comma-separated list of
//! the nodes of a cluster (`nats://a:4222, nats://b:4222, nats://c:4222`).
//!
//! Every element is checked at start the way the client library reads it (schemes `nats`, `tls`,
//! `ws`, `wss`; an element without a scheme means `nats://`), so a bad list stops the process
//! instead of failing on the first reconnection that picks the bad element. Error messages name
//! the element's position, never its text, which may hold a password.
//!
//! Credentials may be written in a URL (`nats://user:password@host`, or `nats://token@host`).
//! The client library sends only the credentials of its options, never those of a URL, so
//! [`NatsServers::apply_credentials`] moves the first URL's credentials into the options; they
//! then apply to every server, including those the client discovers from the cluster.

use std::{fmt, str::FromStr};

use async_nats::{ConnectOptions, ServerAddr};

/// A parsed, non-empty `NATS_URL`. Its `Debug` shows hosts and ports only.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsServers {
    addrs: Vec<ServerAddr>,
    credentials: Option<Credentials>,
}

/// Credentials found in a URL. No `Debug`, so that they cannot end up in a log line.
#[derive(Clone, PartialEq, Eq)]
enum Credentials {
    UserPassword {
        user: String,
        password: String,
    },
    /// A URL with a user part and no password (`nats://s3cr3t@host`), as the NATS clients of
    /// other languages read it.
    Token(String),
}

/// Why a `NATS_URL` cannot be used; says which element, not what it holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatsServersError {
    #[error("element {0} of the comma-separated list is empty")]
    Empty(usize),
    #[error("element {0}: expected a URL starting with nats://, tls://, ws:// or wss://")]
    Scheme(usize),
    #[error("element {0}: not a valid host and port")]
    Address(usize),
}

impl FromStr for NatsServers {
    type Err = NatsServersError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let mut addrs = Vec::new();
        let mut credentials = None;
        for (index, element) in value.split(',').map(str::trim).enumerate() {
            let position = index + 1;
            if element.is_empty() {
                return Err(NatsServersError::Empty(position));
            }
            if let Some((scheme, _)) = element.split_once("://") {
                if !["nats", "tls", "ws", "wss"].contains(&scheme.to_ascii_lowercase().as_str()) {
                    return Err(NatsServersError::Scheme(position));
                }
            }
            let addr: ServerAddr = element
                .parse()
                .map_err(|_| NatsServersError::Address(position))?;
            if addr.host().is_empty() {
                return Err(NatsServersError::Address(position));
            }
            if credentials.is_none() {
                credentials = credentials_of(&addr);
            }
            addrs.push(without_credentials(addr).ok_or(NatsServersError::Address(position))?);
        }
        Ok(Self { addrs, credentials })
    }
}

/// The credentials written in `addr`, percent-decoded.
fn credentials_of(addr: &ServerAddr) -> Option<Credentials> {
    let user = percent_decode(addr.username()?);
    Some(match addr.password() {
        Some(password) => Credentials::UserPassword {
            user,
            password: percent_decode(password),
        },
        None => Credentials::Token(user),
    })
}

/// `addr` without its user and password: the client would not use them, and it logs its
/// server addresses (at debug level) as written.
fn without_credentials(addr: ServerAddr) -> Option<ServerAddr> {
    let mut url = addr.into_inner();
    url.set_username("").ok()?;
    url.set_password(None).ok()?;
    ServerAddr::from_url(url).ok()
}

/// Decodes `%XX` escapes (a URL keeps its user and password encoded); anything malformed is
/// kept as written, and bytes that are not UTF-8 become U+FFFD.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

impl NatsServers {
    /// The servers in the order written; the client tries them in random order.
    pub fn addrs(&self) -> &[ServerAddr] {
        &self.addrs
    }

    /// Whether some URL holds credentials.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// `options` with the credentials of the first URL that has some (user and password, or
    /// token); unchanged when none has.
    pub fn apply_credentials(&self, options: ConnectOptions) -> ConnectOptions {
        match &self.credentials {
            Some(Credentials::UserPassword { user, password }) => {
                options.user_and_password(user.clone(), password.clone())
            }
            Some(Credentials::Token(token)) => options.token(token.clone()),
            None => options,
        }
    }
}

impl fmt::Debug for NatsServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// `scheme://host:port` of each server, comma-separated; credentials are left out.
impl fmt::Display for NatsServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, addr) in self.addrs.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            let host = addr.host();
            if host.contains(':') {
                write!(f, "{}://[{host}]:{}", addr.scheme(), addr.port())?;
            } else {
                write!(f, "{}://{host}:{}", addr.scheme(), addr.port())?;
            }
        }
        if self.credentials.is_some() {
            f.write_str(" (with credentials)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<NatsServers, NatsServersError> {
        value.parse()
    }

    fn ports(servers: &NatsServers) -> Vec<u16> {
        servers.addrs().iter().map(ServerAddr::port).collect()
    }

    #[test]
    fn one_url_is_a_list_of_one() {
        let servers = parse("nats://127.0.0.1:4222").unwrap();
        assert_eq!(ports(&servers), [4222]);
        assert!(!servers.has_credentials());
        assert_eq!(servers.to_string(), "nats://127.0.0.1:4222");
    }

    #[test]
    fn a_comma_separated_list_gives_every_server_in_order_spaces_tolerated() {
        let servers = parse("nats://a:4222,nats://b:5222 ,  tls://c:6222").unwrap();
        assert_eq!(ports(&servers), [4222, 5222, 6222]);
        let hosts: Vec<&str> = servers.addrs().iter().map(ServerAddr::host).collect();
        assert_eq!(hosts, ["a", "b", "c"]);
        assert!(servers.addrs()[2].tls_required());
        assert_eq!(
            servers.to_string(),
            "nats://a:4222,nats://b:5222,tls://c:6222"
        );
        let servers = parse("ws://a:80, wss://b").unwrap();
        assert_eq!(servers.addrs().len(), 2);
    }

    #[test]
    fn an_element_without_a_scheme_is_a_nats_url_with_the_default_port() {
        let servers = parse("a:4223, b").unwrap();
        assert_eq!(ports(&servers), [4223, 4222]);
        assert_eq!(servers.addrs()[1].scheme(), "nats");
    }

    #[test]
    fn an_empty_element_is_rejected_with_its_position() {
        assert_eq!(
            parse("nats://a:4222,,nats://b:4222"),
            Err(NatsServersError::Empty(2))
        );
        assert_eq!(parse("nats://a:4222, "), Err(NatsServersError::Empty(2)));
        assert_eq!(parse(",nats://a:4222"), Err(NatsServersError::Empty(1)));
    }

    #[test]
    fn a_bad_scheme_host_or_port_is_rejected_without_echoing_the_element() {
        let err = parse("nats://a:4222,redis://user:secret@b:6379").unwrap_err();
        assert_eq!(err, NatsServersError::Scheme(2));
        assert!(!err.to_string().contains("secret"));
        for bad in [
            "nats://a:4222, nats://b:99999",
            "nats://a:4222, nats://b:port",
            "nats://a:4222, nats://:4222",
            "nats://a:4222, nats://bad host:4222",
        ] {
            assert_eq!(parse(bad), Err(NatsServersError::Address(2)), "{bad}");
        }
    }

    #[test]
    fn user_and_password_come_from_the_first_url_that_has_them_decoded() {
        let servers =
            parse("nats://a:4222, nats://alice:p%40ss%2Cword@b:4222, nats://bob:other@c:4222")
                .unwrap();
        // Compared, not printed: `Credentials` has no `Debug`, so that it cannot be logged.
        assert!(
            servers.credentials
                == Some(Credentials::UserPassword {
                    user: "alice".into(),
                    password: "p@ss,word".into(),
                })
        );
        // Applying them to the options is the only place they are used.
        let _ = servers.apply_credentials(ConnectOptions::new());
    }

    #[test]
    fn a_user_part_without_a_password_is_a_token() {
        let servers = parse("nats://s3cr3t@a:4222").unwrap();
        assert!(servers.credentials == Some(Credentials::Token("s3cr3t".into())));
    }

    #[test]
    fn credentials_never_show_in_debug_or_display() {
        let servers = parse("nats://alice:hunter2@a:4222,nats://tok3n@b:4222").unwrap();
        assert!(servers.addrs().iter().all(|a| !a.has_user_pass()));
        // The addresses handed to the client (which logs them) hold no credentials either.
        let addrs = format!("{:?}", servers.addrs());
        for text in [format!("{servers:?}"), servers.to_string(), addrs] {
            for secret in ["hunter2", "alice", "tok3n"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
        assert_eq!(
            servers.to_string(),
            "nats://a:4222,nats://b:4222 (with credentials)"
        );
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
