//! Privileged: the address-takeover I/O of hb-agent against a real kernel.
//!
//! Two namespaces, A (the node taking over) and B (a neighbour), joined by a veth pair on
//! 198.18.60.0/24 (and 2001:2::/64, inside the IPv6 benchmarking range, for the IPv6 case).
//! A adds and removes VIPs through `hb_agent::netlink`, announces them through
//! `hb_agent::arp`, and B's neighbour table shows whether the announcements were honoured.
//! Each test builds its own lab, which removes its namespaces even when the test panics.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hb_agent::arp::{Announcer, ArpForm};
use hb_agent::config::GarpSettings;
use hb_agent::netlink::{
    vip_label, AddOutcome, AddressNotice, AddressWatch, DelOutcome, Netlink, NetlinkError,
};
use hb_tests::{require_root, wait_for, Lab, Netns};
use serde_json::Value;

const A_ADDR: &str = "198.18.60.1/24";
const B_ADDR: &str = "198.18.60.2/24";
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
/// A MAC nobody has: B's entry for the VIP points here until an announcement corrects it.
const STALE_MAC: &str = "02:00:00:00:00:01";
const SETTLE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

struct Pair {
    lab: Lab,
    a: Netns,
    b: Netns,
}

fn pair(test: &str) -> Pair {
    let lab = Lab::new(test).expect("lab");
    let a = lab.add_netns("a").expect("namespace a");
    let b = lab.add_netns("b").expect("namespace b");
    lab.add_veth_pair(&a, "va", &b, "vb").expect("veth pair");
    lab.add_address(&a, "va", A_ADDR).expect("address on a");
    lab.add_address(&b, "vb", B_ADDR).expect("address on b");
    Pair { lab, a, b }
}

/// Runs an async test body on a fresh single-threaded runtime inside `netns`, so the
/// netlink and packet sockets it opens belong to that namespace.
fn run_in<T, F, Fut>(lab: &Lab, netns: &Netns, body: F) -> T
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T>,
{
    lab.in_netns(netns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(body())
    })
    .expect("entering namespace")
}

fn settings(count: u32, request: bool, reply: bool) -> GarpSettings {
    GarpSettings {
        count,
        interval: Duration::from_millis(20),
        reply,
        request,
        refresh: None,
    }
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `ip -j addr show dev IFACE`'s entry for `addr`.
fn kernel_address(lab: &Lab, netns: &Netns, iface: &str, addr: IpAddr) -> Option<Value> {
    let json = lab
        .ip_json(netns, &["addr", "show", "dev", iface])
        .expect("ip -j addr");
    let text = addr.to_string();
    json.get(0)?
        .get("addr_info")?
        .as_array()?
        .iter()
        .find(|info| info.get("local").and_then(Value::as_str) == Some(text.as_str()))
        .cloned()
}

/// B's neighbour entry for `ip` on vb: (lladdr, states).
fn neighbour_of_b(pair: &Pair, ip: IpAddr) -> Option<(Option<String>, Vec<String>)> {
    let family = if ip.is_ipv4() { "-4" } else { "-6" };
    let text = ip.to_string();
    let json = pair
        .lab
        .ip_json(
            &pair.b,
            &[family, "neigh", "show", "to", &text, "dev", "vb"],
        )
        .expect("ip -j neigh");
    let entry = json
        .as_array()?
        .iter()
        .find(|e| e.get("dst").and_then(Value::as_str) == Some(&text))?;
    let lladdr = entry
        .get("lladdr")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let states = entry
        .get("state")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Some((lladdr, states))
}

fn plant_stale_entry(pair: &Pair, ip: IpAddr) {
    let text = ip.to_string();
    pair.lab
        .ip(
            &pair.b,
            &[
                "neigh", "replace", &text, "dev", "vb", "lladdr", STALE_MAC, "nud", "stale",
            ],
        )
        .expect("planting a stale neighbour entry");
    assert_eq!(
        neighbour_of_b(pair, ip)
            .and_then(|(lladdr, _)| lladdr)
            .as_deref(),
        Some(STALE_MAC)
    );
}

#[test]
fn ipv4_vip_is_added_with_label_and_removed_idempotently() {
    if !require_root("ipv4_vip_is_added_with_label_and_removed_idempotently") {
        return;
    }
    let pair = pair("takeover_io_v4addr");
    let vip = IpAddr::V4(VIP);
    let label = vip_label("va", 0).expect("label fits");
    assert_eq!(label, "va:hb0");

    let outcomes = run_in(&pair.lab, &pair.a, || async {
        let netlink = Netlink::new().expect("netlink");
        let first = netlink
            .add_address("va", vip, 24, Some(&label), None)
            .await
            .expect("add");
        let again = netlink
            .add_address("va", vip, 24, Some(&label), None)
            .await
            .expect("re-add");
        let listed = netlink.list_addresses("va").await.expect("list");
        let present = netlink.has_address("va", vip).await.expect("has");
        let up = netlink.is_up("va").await.expect("link state");
        (first, again, listed, present, up)
    });
    let (first, again, listed, present, up) = outcomes;
    assert_eq!(first, AddOutcome::Added);
    assert_eq!(again, AddOutcome::AlreadyPresent);
    assert!(present && up);
    let ours = listed.iter().find(|a| a.addr == vip).expect("listed");
    assert_eq!(ours.prefix, 24);
    assert_eq!(ours.label.as_deref(), Some("va:hb0"));
    assert_eq!(ours.broadcast, Some(Ipv4Addr::new(198, 18, 60, 255)));
    assert!(
        ours.secondary,
        "198.18.60.1 came first, so the VIP is secondary"
    );

    // What an operator sees.
    let shown = kernel_address(&pair.lab, &pair.a, "va", vip).expect("ip addr shows the VIP");
    assert_eq!(shown["label"], "va:hb0");
    assert_eq!(shown["prefixlen"], 24);
    assert_eq!(shown["broadcast"], "198.18.60.255");

    let removals = run_in(&pair.lab, &pair.a, || async {
        let netlink = Netlink::new().expect("netlink");
        let first = netlink.del_address("va", vip, 24).await.expect("del");
        let again = netlink.del_address("va", vip, 24).await.expect("del again");
        let present = netlink.has_address("va", vip).await.expect("has");
        (first, again, present)
    });
    assert_eq!(
        removals,
        (DelOutcome::Removed, DelOutcome::NotPresent, false)
    );
    assert!(kernel_address(&pair.lab, &pair.a, "va", vip).is_none());
    assert!(
        kernel_address(&pair.lab, &pair.a, "va", "198.18.60.1".parse().unwrap()).is_some(),
        "removing the VIP must leave the node's own address"
    );
}

#[test]
fn explicit_broadcast_and_errors_name_their_target() {
    if !require_root("explicit_broadcast_and_errors_name_their_target") {
        return;
    }
    let pair = pair("takeover_io_errors");
    let vip = IpAddr::V4(Ipv4Addr::new(198, 18, 60, 101));
    let (added, missing, bad_label, v6_label, not_ours) = run_in(&pair.lab, &pair.a, || async {
        let netlink = Netlink::new().expect("netlink");
        let added = netlink
            .add_address("va", vip, 25, None, Some(Ipv4Addr::new(198, 18, 60, 127)))
            .await
            .expect("add with broadcast");
        let missing = netlink.add_address("nosuch0", vip, 24, None, None).await;
        let bad_label = netlink.add_address("va", vip, 24, Some("vb:0"), None).await;
        let v6_label = netlink
            .add_address("va", IpAddr::V6(VIP6), 64, Some("va:0"), None)
            .await;
        // The kernel's own refusal: the lab disables IPv6 on its interfaces.
        let not_ours = netlink
            .add_address("va", IpAddr::V6(VIP6), 64, None, None)
            .await;
        let multicast = netlink
            .add_address("va", "224.0.0.1".parse().unwrap(), 24, None, None)
            .await;
        assert!(
            matches!(multicast, Err(NetlinkError::InvalidRequest { .. })),
            "{multicast:?}"
        );
        (added, missing, bad_label, v6_label, not_ours)
    });
    assert_eq!(added, AddOutcome::Added);
    let shown = kernel_address(&pair.lab, &pair.a, "va", vip).expect("VIP shown");
    assert_eq!(shown["broadcast"], "198.18.60.127");
    assert_eq!(shown["label"], "va", "no label given: the interface name");

    match missing {
        Err(NetlinkError::NoSuchInterface { iface }) => assert_eq!(iface, "nosuch0"),
        other => panic!("expected NoSuchInterface, got {other:?}"),
    }
    for refused in [bad_label, v6_label] {
        match refused {
            Err(e @ NetlinkError::InvalidRequest { .. }) => {
                assert!(e.to_string().contains("on va"), "{e}");
            }
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }
    match not_ours {
        // Whatever the kernel says, the error carries its errno and names the target.
        Err(e @ NetlinkError::Kernel { .. }) => {
            assert!(e.errno().is_some_and(|errno| errno > 0), "{e:?}");
            let text = e.to_string();
            assert!(
                text.contains("2001:2::100") && text.contains("on va"),
                "{text}"
            );
            // The kernel's extended-ack text survives, not only the errno.
            assert!(text.contains("disabled"), "{text}");
        }
        other => panic!("expected the kernel to refuse IPv6 on va, got {other:?}"),
    }
}

fn garp_form_corrects_a_stale_neighbour(test: &str, form: ArpForm) {
    let pair = pair(test);
    let vip = IpAddr::V4(VIP);
    plant_stale_entry(&pair, vip);
    let count = 2;
    let (mac, report) = run_in(&pair.lab, &pair.a, || async {
        let netlink = Netlink::new().expect("netlink");
        let added = netlink
            .add_address("va", vip, 24, vip_label("va", 0).as_deref(), None)
            .await
            .expect("add VIP");
        assert_eq!(added, AddOutcome::Added);
        let mac = netlink.mac_address("va").await.expect("mac");
        let settings = settings(count, form == ArpForm::Request, form == ArpForm::Reply);
        // Adding an address announces nothing by itself: B must still be stale here, so
        // what changes it below is our frame.
        let before = neighbour_of_b(&pair, vip).and_then(|(lladdr, _)| lladdr);
        assert_eq!(before.as_deref(), Some(STALE_MAC));
        let report = Announcer::new(netlink.clone())
            .announce("va", vip, &settings)
            .await
            .expect("announce");
        (mac, report)
    });
    assert_eq!(report.rounds, count);
    assert_eq!(report.frames_sent, count);
    assert_eq!(report.frames_failed, 0);
    assert!(
        report.elapsed >= Duration::from_millis(20) && report.elapsed < Duration::from_secs(2),
        "{:?}",
        report.elapsed
    );
    let expected = mac_text(mac);
    let seen = wait_for(SETTLE, POLL, || {
        neighbour_of_b(&pair, vip)
            .and_then(|(lladdr, _)| lladdr)
            .filter(|lladdr| *lladdr == expected)
    });
    assert_eq!(
        seen.as_deref(),
        Some(expected.as_str()),
        "B's entry for the VIP: {:?}",
        neighbour_of_b(&pair, vip)
    );
}

#[test]
fn gratuitous_arp_request_corrects_a_stale_neighbour() {
    if !require_root("gratuitous_arp_request_corrects_a_stale_neighbour") {
        return;
    }
    garp_form_corrects_a_stale_neighbour("takeover_io_garp_req", ArpForm::Request);
}

/// The reply form only overrides an entry updated less than `locktime` (1 s) ago when the
/// kernel sees it as gratuitous (target MAC = sender MAC); the entry was planted just now.
#[test]
fn gratuitous_arp_reply_corrects_a_stale_neighbour() {
    if !require_root("gratuitous_arp_reply_corrects_a_stale_neighbour") {
        return;
    }
    garp_form_corrects_a_stale_neighbour("takeover_io_garp_rep", ArpForm::Reply);
}

fn enable_ipv6(lab: &Lab, netns: &Netns, iface: &str) {
    for (key, value) in [
        ("net.ipv6.conf.all.disable_ipv6", "0"),
        (&format!("net.ipv6.conf.{iface}.disable_ipv6") as &str, "0"),
        (&format!("net.ipv6.conf.{iface}.accept_dad") as &str, "0"),
    ] {
        lab.set_sysctl(netns, key, value).expect("ipv6 sysctl");
    }
}

#[test]
fn ipv6_vip_is_usable_at_once_and_announced_by_unsolicited_na() {
    if !require_root("ipv6_vip_is_usable_at_once_and_announced_by_unsolicited_na") {
        return;
    }
    let pair = pair("takeover_io_v6");
    enable_ipv6(&pair.lab, &pair.a, "va");
    enable_ipv6(&pair.lab, &pair.b, "vb");
    pair.lab
        .ip(
            &pair.a,
            &["-6", "addr", "add", "2001:2::1/64", "dev", "va", "nodad"],
        )
        .expect("a's own IPv6 address");
    pair.lab
        .ip(
            &pair.b,
            &["-6", "addr", "add", "2001:2::2/64", "dev", "vb", "nodad"],
        )
        .expect("b's own IPv6 address");
    let vip = IpAddr::V6(VIP6);
    plant_stale_entry(&pair, vip);

    let (added, listed, mac, report) = run_in(&pair.lab, &pair.a, || async {
        let netlink = Netlink::new().expect("netlink");
        let added = netlink
            .add_address("va", vip, 64, None, None)
            .await
            .expect("add VIP6");
        let listed = netlink.list_addresses("va").await.expect("list");
        let mac = netlink.mac_address("va").await.expect("mac");
        let report = Announcer::new(netlink.clone())
            .announce("va", vip, &settings(2, true, true))
            .await
            .expect("announce");
        (added, listed, mac, report)
    });
    assert_eq!(added, AddOutcome::Added);
    let ours = listed.iter().find(|a| a.addr == vip).expect("VIP6 listed");
    assert_eq!(ours.prefix, 64);
    assert!(!ours.tentative && !ours.dad_failed, "{ours:?}");
    let shown = kernel_address(&pair.lab, &pair.a, "va", vip).expect("ip addr shows VIP6");
    assert_eq!(shown["nodad"], true, "{shown}");
    assert!(shown.get("tentative").is_none(), "{shown}");
    assert_eq!(
        report.frames_sent, 2,
        "one advertisement per round: {report:?}"
    );

    let expected = mac_text(mac);
    let seen = wait_for(SETTLE, POLL, || {
        neighbour_of_b(&pair, vip)
            .and_then(|(lladdr, _)| lladdr)
            .filter(|lladdr| *lladdr == expected)
    });
    assert_eq!(
        seen.as_deref(),
        Some(expected.as_str()),
        "B's entry for the VIP: {:?}",
        neighbour_of_b(&pair, vip)
    );

    let removals = run_in(&pair.lab, &pair.a, || async {
        let netlink = Netlink::new().expect("netlink");
        (
            netlink.del_address("va", vip, 64).await.expect("del"),
            netlink.del_address("va", vip, 64).await.expect("del again"),
        )
    });
    assert_eq!(removals, (DelOutcome::Removed, DelOutcome::NotPresent));
    assert!(kernel_address(&pair.lab, &pair.a, "va", vip).is_none());
}

#[test]
fn flush_removes_failed_and_incomplete_neighbours_only() {
    if !require_root("flush_removes_failed_and_incomplete_neighbours_only") {
        return;
    }
    let pair = pair("takeover_io_flush");
    let (lab, a) = (&pair.lab, &pair.a);
    let neigh = |args: &[&str]| {
        let mut full = vec!["neigh", "replace"];
        full.extend_from_slice(args);
        lab.ip(a, &full).expect("ip neigh replace");
    };
    neigh(&["198.18.60.50", "dev", "va", "nud", "failed"]);
    neigh(&["198.18.60.51", "dev", "va", "nud", "incomplete"]);
    neigh(&[
        "198.18.60.52",
        "dev",
        "va",
        "lladdr",
        "02:00:00:00:00:52",
        "nud",
        "reachable",
    ]);
    neigh(&[
        "198.18.60.53",
        "dev",
        "va",
        "lladdr",
        "02:00:00:00:00:53",
        "nud",
        "permanent",
    ]);
    neigh(&[
        "198.18.60.54",
        "dev",
        "va",
        "lladdr",
        "02:00:00:00:00:54",
        "nud",
        "stale",
    ]);
    // And one that failed the way an outage makes them: resolution that got no answer.
    for (key, value) in [
        ("net.ipv4.neigh.va.retrans_time_ms", "100"),
        ("net.ipv4.neigh.va.mcast_solicit", "1"),
        ("net.ipv4.neigh.va.app_solicit", "0"),
    ] {
        lab.set_sysctl(a, key, value).expect("neigh sysctl");
    }
    assert!(!lab
        .ping(a, Ipv4Addr::new(198, 18, 60, 77), Duration::from_secs(1))
        .expect("ping"));
    let state_of = |ip: &str| -> Vec<String> {
        let json = lab
            .ip_json(a, &["-4", "neigh", "show", "to", ip, "dev", "va"])
            .expect("neigh");
        json.get(0)
            .and_then(|e| e.get("state"))
            .and_then(Value::as_array)
            .map(|s| {
                s.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        wait_for(SETTLE, POLL, || state_of("198.18.60.77")
            .contains(&"FAILED".to_owned())
            .then_some(()))
        .is_some(),
        "unanswered resolution should have failed: {:?}",
        state_of("198.18.60.77")
    );

    let (removed, again) = run_in(lab, a, || async {
        let netlink = Netlink::new().expect("netlink");
        (
            netlink.flush_stale_neighbours("va").await.expect("flush"),
            netlink
                .flush_stale_neighbours("va")
                .await
                .expect("flush again"),
        )
    });
    assert_eq!(
        removed, 3,
        "198.18.60.50 (failed), .51 (incomplete), .77 (failed)"
    );
    assert_eq!(again, 0);
    for gone in ["198.18.60.50", "198.18.60.51", "198.18.60.77"] {
        assert!(
            state_of(gone).is_empty(),
            "{gone} still there: {:?}",
            state_of(gone)
        );
    }
    for kept in ["198.18.60.52", "198.18.60.53", "198.18.60.54"] {
        assert!(!state_of(kept).is_empty(), "{kept} was flushed");
    }
}

#[test]
fn address_watch_reports_additions_and_removals() {
    if !require_root("address_watch_reports_additions_and_removals") {
        return;
    }
    let pair = pair("takeover_io_watch");
    let vip = IpAddr::V4(VIP);
    let lab = &pair.lab;
    let a = &pair.a;
    let (ifindex, added, removed) = run_in(lab, a, || async {
        let netlink = Netlink::new().expect("netlink");
        let ifindex = netlink.ifindex("va").await.expect("ifindex");
        let mut watch = AddressWatch::subscribe().expect("subscribe");
        netlink
            .add_address("va", vip, 24, None, None)
            .await
            .expect("add");
        let added = next_about(&mut watch, vip).await;
        // Someone else removes it, as issue 6's watcher must notice.
        lab.ip(a, &["addr", "del", "198.18.60.100/24", "dev", "va"])
            .expect("ip addr del");
        let removed = next_about(&mut watch, vip).await;
        (ifindex, added, removed)
    });
    match added {
        AddressNotice::Added(event) => {
            assert_eq!((event.ifindex, event.prefix), (ifindex, 24));
            assert_eq!(event.label.as_deref(), Some("va"));
        }
        other => panic!("expected Added, got {other:?}"),
    }
    match removed {
        AddressNotice::Removed(event) => assert_eq!(event.ifindex, ifindex),
        other => panic!("expected Removed, got {other:?}"),
    }
}

/// The next notice about `addr` (or an overrun), within the settle time.
async fn next_about(watch: &mut AddressWatch, addr: IpAddr) -> AddressNotice {
    let wanted = async {
        loop {
            match watch.next().await.expect("watch ended") {
                AddressNotice::Added(e) | AddressNotice::Removed(e) if e.addr != addr => continue,
                notice => return notice,
            }
        }
    };
    tokio::time::timeout(SETTLE, wanted)
        .await
        .expect("no address notice within the settle time")
}
