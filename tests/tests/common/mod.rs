//! Helpers shared by the scenario suites (`failover`, `hardening`).

use hb_tests::cluster::{Cluster, ClusterSpec};
use serde_json::Value;

pub fn cluster(name: &str, spec: ClusterSpec) -> Cluster {
    let mut cluster = Cluster::new(name, spec).expect("build the cluster");
    cluster.start_all().expect("start both agents");
    cluster
}

pub fn group_holder(status: &Value) -> Option<String> {
    status["groups"][0]["holder"].as_str().map(str::to_owned)
}

pub fn node_status(status: &Value, name: &str) -> Option<String> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)?["status"]
        .as_str()
        .map(str::to_owned)
}

/// The cluster's keys, read from lb1's `authkeys` as the agent reads them.
pub fn cluster_keys(cluster: &Cluster) -> hb_agent::config::AuthKeys {
    let path = cluster.nodes[0].config_dir.join("authkeys");
    let text = std::fs::read(&path).unwrap();
    hb_agent::config::parse_authkeys(&text, &path).keys.unwrap()
}

/// A well-formed key the cluster does not use.
pub fn wrong_keys() -> hb_agent::config::AuthKeys {
    let text = b"auth 1\n1 sha1 not-the-cluster-key\n";
    hb_agent::config::parse_authkeys(text, std::path::Path::new("authkeys"))
        .keys
        .unwrap()
}
