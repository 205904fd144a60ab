//! Four shards as four hosts would be: each blaster process in a network
//! namespace of its own (made by this test, joined to the host by a veth
//! pair, with its own address), one sink on the host. The sink's referee
//! sees four clients from four addresses; the merged report equals what
//! the sink counted.
//!
//! Needs root and `ip netns` (iproute2). Where namespaces cannot be made
//! (no privilege, a container without CAP_SYS_ADMIN) the test says so and
//! returns, unless `MAILSTORM_REQUIRE_NETNS=1`; `shards.rs` runs the same
//! split as plain processes with distinct loopback sources everywhere.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mailstorm_sink::plan::{Engine, Plan};

use common::child::BIN;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces and links this test made; removed on drop, whatever happens.
struct Hosts {
    names: Vec<String>,
    links: Vec<String>,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = ip(&["link", "del", l]);
        }
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// `n` namespaces, namespace `i` reaching the host at `NET.i.1` from
/// `NET.i.2` (one /24 each; NET picked from the process id so parallel
/// runs of the suite do not collide).
/// One namespace: its name, the host side's address, its own address.
type Host = (String, String, String);

fn make_hosts(n: usize) -> Result<(Hosts, Vec<Host>), String> {
    let tag = std::process::id() % 100_000;
    let octet = 20 + std::process::id() % 200;
    let mut hosts = Hosts {
        names: Vec::new(),
        links: Vec::new(),
    };
    let mut out = Vec::new();
    for i in 0..n {
        let ns = format!("mss{tag}-{i}");
        let (outer, inner) = (format!("msh{tag}{i}"), format!("msn{tag}{i}"));
        let host_ip = format!("10.{octet}.{i}.1");
        let ns_ip = format!("10.{octet}.{i}.2");
        ip(&["netns", "add", &ns])?;
        hosts.names.push(ns.clone());
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ])?;
        hosts.links.push(outer.clone());
        ip(&["link", "set", &inner, "netns", &ns])?;
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &outer])?;
        ip(&["link", "set", &outer, "up"])?;
        let in_ns = |a: &[&str]| {
            let mut v = vec!["netns", "exec", ns.as_str(), "ip"];
            v.extend_from_slice(a);
            ip(&v)
        };
        in_ns(&["addr", "add", &format!("{ns_ip}/24"), "dev", &inner])?;
        in_ns(&["link", "set", &inner, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        out.push((ns, host_ip, ns_ip));
    }
    Ok((hosts, out))
}

#[test]
fn four_shards_from_four_network_namespaces() {
    let (_hosts, hosts) = match make_hosts(4) {
        Ok(h) => h,
        Err(e) if std::env::var("MAILSTORM_REQUIRE_NETNS").as_deref() != Ok("1") => {
            eprintln!("skipping: cannot make network namespaces here ({e})");
            return;
        }
        Err(e) => panic!("MAILSTORM_REQUIRE_NETNS=1 but: {e}"),
    };
    let engine = Arc::new(Engine::new());
    // A plan without rules: the referee watches clients while one is loaded.
    engine.load(Plan::from_yaml_str("rules: []\n", "empty plan").unwrap());
    let sink = common::sink_builder()
        .listen(SocketAddr::from(([0, 0, 0, 0], 0)))
        .fault_engine(engine.clone())
        .start()
        .unwrap();
    // The builder's first address is loopback; the wildcard one serves the
    // namespaces.
    let port = sink
        .local_addrs()
        .iter()
        .find(|a| a.ip().is_unspecified())
        .expect("the wildcard listener")
        .port();
    let dir = std::env::temp_dir().join(format!("mailstorm-netns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 2.0;
    let start = format!("{start:.3}");
    let children: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, (ns, host_ip, _))| {
            let report = dir.join(format!("shard-{i}.json"));
            let child = Command::new("ip")
                .args(["netns", "exec", ns, BIN])
                .args(["--target", &format!("{host_ip}:{port}"), "--allow-remote"])
                .args(["--shard", &format!("{i}/4"), "--run-id", "netns-1"])
                .args(["--start-at", &start, "--helo", &format!("shard{i}.test")])
                .args(["--rate", "400", "-n", "400", "-c", "8", "-d", "20s"])
                .args(["-t", "1", "--no-pin", "-q", "--report"])
                .arg(&report)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (report, child)
        })
        .collect();
    let parts: Vec<_> = children
        .into_iter()
        .map(|(report, child)| {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            report
        })
        .collect();
    let merged = dir.join("merged.json");
    let out = Command::new(BIN)
        .arg("merge")
        .args(&parts)
        .args([
            "--report",
            merged.to_str().unwrap(),
            "--threshold",
            "accepted==400",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&merged).unwrap()).unwrap();
    assert_eq!(m["messages"]["accepted"], 400);
    assert_eq!(sink.stats().messages_accepted, 400);
    // Four clients, each from its own namespace's address, a quarter each.
    let clients = engine.referee_report().clients;
    for (i, (_, _, ns_ip)) in hosts.iter().enumerate() {
        let c = clients
            .get(&format!("shard{i}.test"))
            .unwrap_or_else(|| panic!("shard {i}: clients {:?}", clients.keys()));
        assert_eq!(
            c.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![ns_ip.clone()],
            "shard {i}"
        );
        assert_eq!(c.messages, 100, "shard {i}: {c:?}");
    }
    sink.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
