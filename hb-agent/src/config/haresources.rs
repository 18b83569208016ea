//! `haresources`: one resource group per logical line, `preferred-node resource...`.
//!
//! A line ending in `\` continues on the next one; `#` starting a word begins a comment.
//! Resources, as Heartbeat's ResourceManager read them:
//! - a bare IPv4 address (with optional `/PREFIX/IFACE/BROADCAST`) is `IPaddr`;
//! - `IPaddr::SPEC`, `IPaddr2::SPEC` (see [`super::addr::parse_ipv4_spec`]);
//! - `IPv6addr::ADDR/PREFIX[/IFACE]` (everything after `IPv6addr::` is the address spec,
//!   so the `::` inside IPv6 addresses is not taken for an argument separator);
//! - anything else is a script or unit name, with `::`-separated arguments.
//!
//! The first resource's text names the group; node names compare case-insensitively, as
//! Heartbeat lower-cased them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use super::addr::{parse_ipv4_spec, parse_ipv6_spec, AddrError};
use super::diag::{Diagnostic, Reporter};
use super::text::{display_text, raw_lines, strip_comment_word, words, WHITESPACE};
use super::{IpAgent, Origin, Resource, ResourceGroup};

/// A resource token that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("`{resource}`: {source}")]
    Address {
        resource: String,
        #[source]
        source: AddrError,
    },
    #[error("`{0}`: {1} takes one argument, ADDR[/PREFIX][/IFACE][/BROADCAST]")]
    ExtraIpArgs(String, &'static str),
    #[error("`{0}`: IPv6 service addresses are written IPv6addr::ADDR/PREFIX[/IFACE]")]
    BareIpv6(String),
    #[error("`{0}`: the resource name before `::` is empty")]
    EmptyName(String),
    #[error(
        "`{0}`: resource names are looked up in resource.d, /etc/init.d and as systemd units, \
         so they cannot contain `/`"
    )]
    SlashInName(String),
}

/// Parses one resource word.
pub fn parse_resource(token: &str) -> Result<Resource, ResourceError> {
    let address_error = |source: AddrError| ResourceError::Address {
        resource: token.to_string(),
        source,
    };
    let Some((name, rest)) = token.split_once("::") else {
        if looks_like_ipv4(token) {
            let spec = parse_ipv4_spec(token).map_err(address_error)?;
            return Ok(ipv4_resource(spec, IpAgent::Bare));
        }
        let before_slash = token.split('/').next().unwrap_or(token);
        if before_slash.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(ResourceError::BareIpv6(token.to_string()));
        }
        return script(token, token, Vec::new());
    };
    // `2001:db8::1` written bare splits into a hex "name": catch it before calling it a script.
    if token
        .split('/')
        .next()
        .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    {
        return Err(ResourceError::BareIpv6(token.to_string()));
    }
    match name {
        "IPaddr" | "IPaddr2" => {
            let agent = if name == "IPaddr" {
                IpAgent::IPaddr
            } else {
                IpAgent::IPaddr2
            };
            if rest.contains("::") {
                return Err(ResourceError::ExtraIpArgs(
                    token.to_string(),
                    if name == "IPaddr" {
                        "IPaddr"
                    } else {
                        "IPaddr2"
                    },
                ));
            }
            let spec = parse_ipv4_spec(rest).map_err(address_error)?;
            Ok(ipv4_resource(spec, agent))
        }
        "IPv6addr" => {
            let spec = parse_ipv6_spec(rest).map_err(address_error)?;
            Ok(Resource::Ipv6 {
                addr: spec.addr,
                prefix: spec.prefix,
                iface: spec.iface,
            })
        }
        _ => script(token, name, rest.split("::").map(str::to_string).collect()),
    }
}

fn script(token: &str, name: &str, args: Vec<String>) -> Result<Resource, ResourceError> {
    if name.is_empty() {
        return Err(ResourceError::EmptyName(token.to_string()));
    }
    if name.contains('/') {
        return Err(ResourceError::SlashInName(token.to_string()));
    }
    Ok(Resource::Script {
        name: name.to_string(),
        args,
    })
}

fn ipv4_resource(spec: super::addr::Ipv4Spec, agent: IpAgent) -> Resource {
    Resource::Ipv4 {
        addr: spec.addr,
        prefix: spec.prefix,
        iface: spec.iface,
        broadcast: spec.broadcast,
        agent,
    }
}

/// Heartbeat's ResourceManager took any word shaped `N.N.N.N...` for an IPaddr resource.
fn looks_like_ipv4(token: &str) -> bool {
    let addr = token.split('/').next().unwrap_or(token);
    addr.starts_with(|c: char| c.is_ascii_digit())
        && addr.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && addr.bytes().filter(|&b| b == b'.').count() == 3
}

/// Script names like `<ServiceIP>` come from documentation that wanted them replaced.
fn placeholder_hint(resource: &Resource) -> Option<String> {
    match resource {
        Resource::Script { name, .. } if name.contains('<') || name.contains('>') => Some(format!(
            "resource `{name}` looks like a placeholder from documentation: hb will look for a \
             script or unit of that name and fail; put the real address or service name here"
        )),
        _ => None,
    }
}

/// Result of reading `haresources`: the groups that parsed, and every problem found.
#[derive(Debug, Default)]
pub struct HaResources {
    pub groups: Vec<ResourceGroup>,
    /// The line of each group as written (same order as `groups`), for later messages.
    pub texts: Vec<String>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses `haresources` (syntax only; node names are checked against `ha.cf` later).
pub fn parse_haresources(data: &[u8], file: &Path) -> HaResources {
    let mut reporter = Reporter::new(file);
    let mut groups: Vec<ResourceGroup> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut addresses: HashMap<IpAddr, (String, usize)> = HashMap::new();

    for logical in logical_lines(data, &mut reporter) {
        let text = logical.text.as_str();
        let mut tokens = words(&logical.content, WHITESPACE);
        let Some(node) = tokens.next() else { continue };
        let resource_words: Vec<&str> = tokens.collect();
        if resource_words.is_empty() {
            reporter.error(
                logical.line,
                text,
                format!(
                    "resource group for `{node}` lists no resources: write `{node} RESOURCE...`"
                ),
            );
            continue;
        }
        let mut resources = Vec::with_capacity(resource_words.len());
        let mut ok = true;
        for word in &resource_words {
            match parse_resource(word) {
                Ok(resource) => {
                    if let Some(hint) = placeholder_hint(&resource) {
                        reporter.warning(logical.line, text, hint);
                    }
                    resources.push(resource);
                }
                Err(err) => {
                    reporter.error(logical.line, text, err.to_string());
                    ok = false;
                }
            }
        }
        if !ok {
            continue;
        }
        let name = resource_words[0].to_string();
        if let Some(first_line) = names.get(&name) {
            reporter.error(
                logical.line,
                text,
                format!(
                    "duplicate resource group `{name}` (first defined on line {first_line}): the \
                     first resource names the group, so it must differ between lines"
                ),
            );
            continue;
        }
        let mut clash = false;
        for resource in &resources {
            let Some(addr) = resource.address() else {
                continue;
            };
            if let Some((other, other_line)) = addresses.get(&addr) {
                reporter.error(
                    logical.line,
                    text,
                    format!(
                        "address {addr} is already managed by group `{other}` (line {other_line}); \
                         two groups holding one address would take it from each other"
                    ),
                );
                clash = true;
            }
        }
        if clash {
            continue;
        }
        for resource in &resources {
            if let Some(addr) = resource.address() {
                addresses.insert(addr, (name.clone(), logical.line));
            }
        }
        names.insert(name.clone(), logical.line);
        texts.push(logical.text.clone());
        groups.push(ResourceGroup {
            name,
            preferred: node.to_lowercase(),
            resources,
            origin: Origin {
                file: file.to_path_buf(),
                line: logical.line,
            },
        });
    }
    HaResources {
        groups,
        texts,
        diagnostics: reporter.finish(),
    }
}

/// One resource group line after joining continuations.
struct LogicalLine {
    /// Number of its first physical line.
    line: usize,
    /// Comment-free content, continuations joined with a space.
    content: String,
    /// As written (physical lines joined with ` \ `), for messages.
    text: String,
}

fn logical_lines(data: &[u8], reporter: &mut Reporter) -> Vec<LogicalLine> {
    let mut out = Vec::new();
    let mut current: Option<LogicalLine> = None;
    for raw in raw_lines(data) {
        let content_bytes = strip_comment_word(raw.bytes);
        let content = match std::str::from_utf8(content_bytes) {
            Ok(c) => c,
            Err(_) => {
                reporter.error(
                    raw.number,
                    &display_text(raw.bytes),
                    "line is not valid UTF-8",
                );
                current = None;
                continue;
            }
        };
        let content = content.trim_end_matches(WHITESPACE);
        let (content, continues) = match content.strip_suffix('\\') {
            Some(head) => (head, true),
            None => (content, false),
        };
        let shown = display_text(raw.bytes);
        let logical = current.get_or_insert_with(|| LogicalLine {
            line: raw.number,
            content: String::new(),
            text: String::new(),
        });
        if !logical.text.is_empty() {
            logical.text.push(' ');
        }
        logical.text.push_str(shown.trim_start_matches(WHITESPACE));
        logical.content.push(' ');
        logical.content.push_str(content);
        if !continues {
            if let Some(done) = current.take() {
                if !done.content.trim_matches(WHITESPACE).is_empty() {
                    out.push(done);
                }
            }
        }
    }
    if let Some(done) = current.take() {
        // A `\` on the last line continues into nothing: keep what there is.
        if !done.content.trim_matches(WHITESPACE).is_empty() {
            out.push(done);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn parse(text: &str) -> HaResources {
        parse_haresources(text.as_bytes(), Path::new("/etc/ha.d/haresources"))
    }

    #[test]
    fn resource_forms() {
        assert_eq!(
            parse_resource("10.8.0.1").unwrap(),
            Resource::Ipv4 {
                addr: Ipv4Addr::new(10, 8, 0, 1),
                prefix: None,
                iface: None,
                broadcast: None,
                agent: IpAgent::Bare
            }
        );
        assert_eq!(
            parse_resource("IPaddr2::192.168.1.100/24/eth1").unwrap(),
            Resource::Ipv4 {
                addr: Ipv4Addr::new(192, 168, 1, 100),
                prefix: Some(24),
                iface: Some("eth1".into()),
                broadcast: None,
                agent: IpAgent::IPaddr2
            }
        );
        assert_eq!(
            parse_resource("IPv6addr::2001:db8::10/64/eth0").unwrap(),
            Resource::Ipv6 {
                addr: "2001:db8::10".parse::<Ipv6Addr>().unwrap(),
                prefix: 64,
                iface: Some("eth0".into())
            }
        );
        assert_eq!(
            parse_resource("Filesystem::/dev/sda1::/data::ext4").unwrap(),
            Resource::Script {
                name: "Filesystem".into(),
                args: vec!["/dev/sda1".into(), "/data".into(), "ext4".into()]
            }
        );
        assert_eq!(
            parse_resource("nginx").unwrap(),
            Resource::Script {
                name: "nginx".into(),
                args: vec![]
            }
        );
        assert_eq!(
            parse_resource("2001:db8::1"),
            Err(ResourceError::BareIpv6("2001:db8::1".into()))
        );
        assert_eq!(
            parse_resource("::x"),
            Err(ResourceError::EmptyName("::x".into()))
        );
        assert_eq!(
            parse_resource("../../bin/sh"),
            Err(ResourceError::SlashInName("../../bin/sh".into()))
        );
        assert!(matches!(
            parse_resource("10.0.0.300"),
            Err(ResourceError::Address { .. })
        ));
        assert!(matches!(
            parse_resource("IPaddr::10.0.0.1::x"),
            Err(ResourceError::ExtraIpArgs(..))
        ));
    }

    #[test]
    fn continuation_and_comments() {
        let parsed = parse(
            "# groups\nNode1 10.0.0.1 \\\n   nginx # web\n\nnode2 IPaddr::10.0.0.2 \\\n  haproxy\n",
        );
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        assert_eq!(parsed.groups.len(), 2);
        let g = &parsed.groups[0];
        assert_eq!(
            (g.name.as_str(), g.preferred.as_str(), g.origin.line),
            ("10.0.0.1", "node1", 2)
        );
        assert_eq!(g.resources.len(), 2);
        assert_eq!(parsed.groups[1].origin.line, 5);
    }

    #[test]
    fn duplicate_group_names_and_addresses() {
        let parsed = parse("a 10.0.0.1 nginx\nb 10.0.0.1 haproxy\nb IPaddr::10.0.0.1/24 x\n");
        assert_eq!(parsed.groups.len(), 1);
        let messages: Vec<_> = parsed
            .diagnostics
            .iter()
            .map(|d| (d.line, d.message.as_str()))
            .collect();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].0, Some(2));
        assert!(messages[0]
            .1
            .starts_with("duplicate resource group `10.0.0.1` (first defined on line 1)"));
        assert_eq!(messages[1].0, Some(3));
        assert!(messages[1]
            .1
            .starts_with("address 10.0.0.1 is already managed by group `10.0.0.1`"));
    }

    #[test]
    fn placeholder_is_a_warning() {
        let parsed = parse("SwapNginxActive <ServiceIP> nginx\n");
        assert_eq!(parsed.groups.len(), 1);
        assert_eq!(parsed.diagnostics.len(), 1);
        assert!(parsed.diagnostics[0].message.contains("placeholder"));
    }
}
