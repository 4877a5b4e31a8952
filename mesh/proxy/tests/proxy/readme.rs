//! The README shows `examples/split.yaml` verbatim, and the example is a working config.

use std::path::Path;

const README: &str = include_str!("../../README.md");
const SPLIT: &str = include_str!("../../examples/split.yaml");

#[test]
fn the_readme_shows_the_split_example_verbatim() {
    let marker = "## Static configuration: `mesh/proxy/examples/split.yaml`";
    let section = &README[README.find(marker).expect("section in README")..];
    let start = section.find("```yaml\n").expect("yaml block") + "```yaml\n".len();
    let block = &section[start..];
    let block = &block[..block.find("```").expect("block end")];
    assert_eq!(
        block, SPLIT,
        "README block differs from examples/split.yaml"
    );
}

#[test]
fn the_split_example_parses_into_the_documented_setup() {
    let cfg = serin_proxy::config::parse(Path::new("examples/split.yaml"), SPLIT).expect("valid");
    assert_eq!(cfg.proxy.outbound.to_string(), "127.0.0.1:14140");
    assert_eq!(
        cfg.proxy.admin.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:14191")
    );
    let route = &cfg.table.routes[0];
    assert_eq!(route.authority.to_string(), "podinfo");
    let insiders = &route.rules[0];
    assert_eq!(insiders.matches[0].headers[0].name, "x-canary");
    assert_eq!(insiders.matches[0].headers[0].value, "insider");
    assert_eq!(insiders.backends.len(), 1);
    assert_eq!(insiders.backends[0].name, "podinfo-canary");
    let split = &route.rules[1];
    let weights: Vec<(&str, u32, String)> = split
        .backends
        .iter()
        .map(|b| {
            let eps = b.endpoints.as_ref().expect("endpoints");
            (b.name.as_str(), b.weight, eps[0].to_string())
        })
        .collect();
    assert_eq!(
        weights,
        [
            ("podinfo-primary", 90, "127.0.0.1:19001".to_string()),
            ("podinfo-canary", 10, "127.0.0.1:19002".to_string())
        ]
    );
}

#[test]
fn the_documented_route_table_example_parses() {
    let marker = "### `routes:` — the route table";
    let section = &README[README.find(marker).expect("section")..];
    let start = section.find("```yaml\n").expect("yaml block") + "```yaml\n".len();
    let block = &section[start..];
    let block = &block[..block.find("```").expect("block end")];
    serin_proxy::config::parse(Path::new("README.md"), block)
        .expect("README route example is valid");
}
