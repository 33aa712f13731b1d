//! The network: namespaces, the bridge, veth pairs, and cuts as blackhole routes.
//!
//! Every link is made from inside the switch namespace (`ip -n SW link add v-NODE type veth
//! peer name eth0 netns NODE_NS`), so no interface ever appears in the root namespace. A cut
//! of `from -> to` is `ip -n NS(from) route add blackhole IP(to)/32`: `from` can no longer send
//! to `to` (its connects fail at once, its packets on open connections are dropped); healing
//! deletes the route. `tc netem` is not used (these machines have none).
//!
//! # To ensure correctness
//! [`Cuts`] knows every route it added, so [`Cuts::heal_all`] removes exactly those; a cut
//! added twice is one route (a set), so healing never leaves one behind.

use std::collections::BTreeSet;
use std::process::Command;

use super::layout::{Layout, Node, PREFIX_LEN};

/// Runs `ip ARGS`, blocking; the error names the command and what it printed.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("`ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// [`ip`], without blocking the runtime.
pub async fn ip_async(args: Vec<String>) -> Result<(), String> {
    let out = tokio::process::Command::new("ip")
        .args(&args)
        .output()
        .await
        .map_err(|e| format!("`ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates the switch and every node's namespace, linked to it, with `lo` up and its address
/// on `eth0`. Blocking; run it before the workload starts.
pub fn create(layout: &Layout) -> Result<(), String> {
    let sw = layout.switch_ns();
    ip(&["netns", "add", &sw])?;
    ip(&["-n", &sw, "link", "set", "lo", "up"])?;
    ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &sw, "link", "set", "br0", "up"])?;
    for node in layout.nodes() {
        let ns = layout.ns(node);
        let port = format!("v-{}", node.name());
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
        let addr = format!("{}/{PREFIX_LEN}", node.ip());
        ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    }
    Ok(())
}

/// The blackhole routes in place, as `(sender, receiver)`.
#[derive(Debug, Default)]
pub struct Cuts {
    active: BTreeSet<(Node, Node)>,
}

impl Cuts {
    /// Drops every packet `from` sends to `to`. Idempotent.
    pub async fn cut(&mut self, layout: &Layout, from: Node, to: Node) -> Result<(), String> {
        if from == to || self.active.contains(&(from, to)) {
            return Ok(());
        }
        ip_async(route_args(layout, "add", from, to)).await?;
        self.active.insert((from, to));
        Ok(())
    }

    /// Cuts both directions between `a` and each of `others`.
    pub async fn cut_both(
        &mut self,
        layout: &Layout,
        a: Node,
        others: &[Node],
    ) -> Result<(), String> {
        for &b in others {
            self.cut(layout, a, b).await?;
            self.cut(layout, b, a).await?;
        }
        Ok(())
    }

    /// Removes every route this added; the first failure is returned after trying them all.
    pub async fn heal_all(&mut self, layout: &Layout) -> Result<(), String> {
        let mut first_error = None;
        for (from, to) in std::mem::take(&mut self.active) {
            if let Err(e) = ip_async(route_args(layout, "del", from, to)).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// "b1->b2, b2->b1" for logs.
    pub fn describe(&self) -> String {
        self.active
            .iter()
            .map(|(a, b)| format!("{}->{}", a.name(), b.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn route_args(layout: &Layout, verb: &str, from: Node, to: Node) -> Vec<String> {
    vec![
        "-n".into(),
        layout.ns(from),
        "route".into(),
        verb.into(),
        "blackhole".into(),
        format!("{}/32", to.ip()),
    ]
}
