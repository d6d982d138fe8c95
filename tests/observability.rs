//! The shipped Grafana dashboard and Prometheus rules (deploy/grafana, deploy/prometheus)
//! read only series a running server exposes, and the dashboard has what an import needs.
//! promtool checks the rules' syntax and alerts (deploy/test-observability.sh); this checks
//! their names against the real `/metrics`.

mod common;

use std::collections::{BTreeSet, HashSet};

use common::*;
use serde_json::Value;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/grafana/sigver-dashboard.json"
);
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/prometheus/sigver-rules.yml"
);

/// The filter every sigver selector of the dashboard carries.
const INSTANCE_FILTER: &str = "instance=~\"$instance\"";

/// Every `sigver_[a-z0-9_]+` name in `text`, with the byte offset just past it.
fn metric_names(text: &str) -> Vec<(String, usize)> {
    let bytes = text.as_bytes();
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("sigver_").map(|i| from + i) {
        let word_start =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let mut end = at + "sigver_".len();
        while end < bytes.len() && matches!(bytes[end], b'a'..=b'z' | b'0'..=b'9' | b'_') {
            end += 1;
        }
        if word_start && end > at + "sigver_".len() {
            names.push((text[at..end].to_string(), end));
        }
        from = end;
    }
    names
}

/// The sample names of a Prometheus text exposition (a histogram's `_bucket`, `_sum` and
/// `_count` as written).
fn sample_names(exposition: &str) -> HashSet<String> {
    exposition
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The names of `exprs` that `exposed` lacks, each with the expression that uses it.
fn unknown_names(exprs: &[String], exposed: &HashSet<String>) -> BTreeSet<String> {
    exprs
        .iter()
        .flat_map(|e| metric_names(e).into_iter().map(move |(n, _)| (n, e)))
        .filter(|(n, _)| !exposed.contains(n))
        .map(|(n, e)| format!("{n} (in {e})"))
        .collect()
}

/// The `/metrics` text of a running server.
fn scrape(server: &TestServer) -> String {
    let request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let answer = String::from_utf8(raw_exchange(server.addr, request)).expect("UTF-8");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete answer");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    body.to_string()
}

/// The value of the unlabelled sample `name`.
fn sample(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{exposition}"))
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).expect("the dashboard file");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, those inside rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The query of a template variable: a string, or an object holding it (newer Grafana).
fn variable_query(v: &Value) -> String {
    match &v["query"] {
        Value::String(s) => s.clone(),
        q => q["query"].as_str().unwrap_or_default().to_string(),
    }
}

/// Every PromQL expression of the dashboard: panel targets and the instance variable.
fn dashboard_exprs(d: &Value) -> Vec<String> {
    let mut exprs: Vec<String> = panels(d)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            exprs.push(variable_query(v));
        }
    }
    exprs
}

/// Every `expr:` of the rules file, with the lines of a `|` block under it.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let mut expr = value.trim().to_string();
        if expr == "|" || expr == ">" {
            expr.clear();
            while let Some(next) =
                lines.next_if(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            {
                expr.push_str(next.trim());
                expr.push('\n');
            }
        }
        exprs.push(expr);
    }
    exprs
}

#[test]
fn dashboard_and_rules_use_only_exposed_names() {
    // Proves every sigver_ name in the dashboard's and the rules' expressions is a sample
    // name of a real /metrics, and that the check catches a name that is not.
    let server = TestServer::start();
    let exposed = sample_names(&scrape(&server));

    let d = dashboard();
    let from_dashboard = dashboard_exprs(&d);
    let rules = std::fs::read_to_string(RULES).expect("the rules file");
    let from_rules = rule_exprs(&rules);
    assert_eq!(
        from_rules.len(),
        rules.matches("- alert:").count(),
        "one expression per alert"
    );
    for exprs in [&from_dashboard, &from_rules] {
        assert!(
            exprs.iter().filter(|e| !metric_names(e).is_empty()).count() >= 5,
            "too few expressions found: {exprs:?}"
        );
        let unknown = unknown_names(exprs, &exposed);
        assert!(unknown.is_empty(), "not in /metrics: {unknown:#?}");
    }
    // Annotations name metrics for the reader to look up: those must exist too.
    let mentioned: Vec<String> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect();
    let unknown = unknown_names(&mentioned, &exposed);
    assert!(unknown.is_empty(), "not in /metrics: {unknown:#?}");

    // The same check on a misspelt histogram name, and on a name the server never had.
    let wrong = [
        "histogram_quantile(0.99, rate(sigver_relay_latency_bucket[5m]))".to_string(),
        "sigver_connections / sigver_connection_limit".to_string(),
    ];
    let caught = unknown_names(&wrong, &exposed);
    assert_eq!(caught.len(), 2, "{caught:?}");
}

#[test]
fn limits_are_exported_as_configured() {
    // Proves sigver_memory_budget_bytes and sigver_max_connections carry --memory-budget
    // and the connection limit in force, which the alerts divide by.
    let server = TestServer::with(|c| {
        c.memory_budget = 48 << 20;
        c.max_connections = Some(321);
    });
    let text = scrape(&server);
    assert_eq!(
        sample(&text, "sigver_memory_budget_bytes"),
        f64::from(48 << 20)
    );
    assert_eq!(sample(&text, "sigver_max_connections"), 321.0);
    assert!(
        text.contains("# TYPE sigver_max_connections gauge\n"),
        "{text}"
    );

    // Without --max-connections, the limit the open-file limit allows (never 0).
    let server = TestServer::start();
    assert!(sample(&scrape(&server), "sigver_max_connections") >= 1.0);
}

#[test]
fn dashboard_is_importable() {
    // Proves the dashboard has what a Grafana import needs: title, uid, schemaVersion,
    // panels with unique ids and grid positions, a data source variable every panel uses,
    // and an instance variable every query filters on.
    let d = dashboard();
    for key in ["title", "uid"] {
        assert!(d[key].as_str().is_some_and(|s| !s.is_empty()), "no {key}");
    }
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 30),
        "schemaVersion"
    );

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .expect("a Prometheus data source variable");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().expect("its name"));
    let instance = vars
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an instance variable");
    let query = variable_query(instance);
    assert!(query.starts_with("label_values(sigver_"), "{query}");
    assert!(query.ends_with(", instance)"), "{query}");
    assert_eq!(instance["multi"], true, "several instances at once");
    assert_eq!(instance["includeAll"], true, "all instances");
    assert_eq!(instance["datasource"]["uid"], ds_ref.as_str());

    let all = panels(&d);
    let mut ids = HashSet::new();
    let mut kinds = HashSet::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or_default();
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "{title}: id {id} twice");
        let g = &p["gridPos"];
        let [h, w, x, y] = ["h", "w", "x", "y"].map(|k| g[k].as_u64());
        let (Some(h), Some(w), Some(x), Some(_)) = (h, w, x, y) else {
            panic!("{title}: gridPos {g}");
        };
        assert!(h > 0 && w > 0 && x + w <= 24, "{title}: gridPos {g}");
        let kind = p["type"].as_str().unwrap_or_default();
        kinds.insert(kind);
        if kind == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], ds_ref.as_str(), "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no target");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert_eq!(t["datasource"]["uid"], ds_ref.as_str(), "{title}");
            assert!(expr.contains(INSTANCE_FILTER), "{title}: {expr}");
            // Each sigver selector is filtered, not just one of an expression's.
            for (name, end) in metric_names(expr) {
                let selector = expr[end..].split_once('}').map(|(s, _)| s);
                assert!(
                    expr[end..].starts_with('{')
                        && selector.is_some_and(|s| s.contains(INSTANCE_FILTER)),
                    "{title}: {name} unfiltered in {expr}"
                );
            }
        }
    }
    assert!(
        kinds.contains("timeseries") && kinds.contains("stat"),
        "{kinds:?}"
    );
}
