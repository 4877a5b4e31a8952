//! Server-rendered HTML: the overview, the detail page with its timeline, and SVG charts.
//!
//! No build step: the pages are plain HTML with one small inline script that listens to the
//! server-sent events and swaps in freshly rendered fragments, and sends actions with the token.

use std::fmt::Write as _;

use jiff::Timestamp;

use crate::listing::{ListQuery, Listing, PAGE_SIZE};
use crate::model::{
    Action, CanaryDetail, CanarySummary, EntryKind, HistoryEntry, Phase, PlanInfo, RunResult,
    RunSummary, Series, Severity, Verdict, WaitReason,
};

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a path segment (namespace and name are DNS labels, but never trust that).
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn time(ts: Option<Timestamp>) -> String {
    ts.map_or_else(
        || "—".to_string(),
        |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

fn clock(t: Timestamp) -> String {
    t.strftime("%H:%M:%S").to_string()
}

/// Formats a measured value with at most three decimals, without trailing zeros.
fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

const STYLE: &str = r#"
:root{--fg:#1d2430;--muted:#667085;--line:#e4e7ec;--bg:#f7f8fa;--ok:#0f7b3f;--bad:#c4320a;--warn:#b54708;--run:#175cd3}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;gap:16px;align-items:center;padding:10px 20px;background:#101828;color:#fff;flex-wrap:wrap}
header h1{font-size:18px;margin:0}header a{color:#fff;text-decoration:none}
header .sp{flex:1}header input{padding:4px 6px;border-radius:4px;border:1px solid #475467;background:#1d2939;color:#fff;width:150px}
#live{font-size:12px;padding:2px 8px;border-radius:10px;background:#475467}#live.on{background:#067647}
#mode{font-size:12px;color:#d0d5dd}
main{padding:16px 20px;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line)}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;background:#fcfcfd}
.phase{font-weight:600;padding:1px 8px;border-radius:10px;font-size:12px;white-space:nowrap}
.p-Succeeded,.p-Initialized{background:#dcfae6;color:var(--ok)}.p-Failed{background:#fee4e2;color:var(--bad)}
.p-Progressing,.p-Promoting,.p-Finalising{background:#d1e9ff;color:var(--run)}
.p-Waiting,.p-WaitingPromotion{background:#fef0c7;color:var(--warn)}.p-Initializing,.p-Terminating,.p-Terminated{background:#f2f4f7;color:var(--muted)}
.bar{display:inline-block;width:80px;height:8px;background:#eaecf0;border-radius:4px;vertical-align:middle;margin-right:6px}
.bar i{display:block;height:8px;border-radius:4px;background:#f79009}
.card{background:#fff;border:1px solid var(--line);border-radius:6px;padding:12px 16px;margin-bottom:14px}
.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:6px 20px}.kv div>span:first-child{color:var(--muted);font-size:12px;display:block}
table.timeline{table-layout:fixed}table.timeline td:nth-child(1){width:170px}table.timeline td:nth-child(2){width:100px}
.charts{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:14px}.charts svg{background:#fff;border:1px solid var(--line);border-radius:6px}
.run h3{font-size:15px;margin:18px 0 6px}.pass{color:var(--ok)}.fail{color:var(--bad)}.inconclusive{color:var(--warn)}
.muted{color:var(--muted)}.actions{display:flex;gap:8px;flex-wrap:wrap;align-items:center;margin-bottom:14px}
button{padding:5px 12px;border:1px solid #d0d5dd;border-radius:5px;background:#fff;cursor:pointer;font:inherit}button:hover{background:#f2f4f7}
#action-result.ok{color:var(--ok)}#action-result.err{color:var(--bad)}
.waiting{color:var(--warn);font-weight:600}
.filter{display:flex;gap:8px;align-items:center;margin-bottom:10px;flex-wrap:wrap}.filter select,.filter input{padding:4px 6px;border:1px solid #d0d5dd;border-radius:4px;font:inherit}
.summary{display:flex;gap:6px;flex-wrap:wrap;margin-bottom:10px}.count{padding:2px 10px;border-radius:12px;border:1px solid var(--line);background:#fff;color:var(--fg);text-decoration:none;font-size:12px}.count.active{outline:2px solid var(--run)}
.pager{display:flex;gap:12px;align-items:center;margin-top:10px;color:var(--muted)}
"#;

fn header(actions_enabled: bool, back: bool) -> String {
    format!(
        r#"<header><h1><a href="/">Serin</a></h1>{back}<span id="live">connecting…</span><span class="sp"></span><span id="mode">{mode}</span><input id="actor" placeholder="your name" aria-label="your name"><input id="token" type="password" placeholder="dashboard token" aria-label="dashboard token"></header>"#,
        back = if back {
            r#"<a href="/">← all canaries</a>"#
        } else {
            ""
        },
        mode = if actions_enabled {
            "actions need the token"
        } else {
            "read-only (no token configured)"
        },
    )
}

const SCRIPT: &str = r#"
(function(){
  window.serinLoadId = Math.random().toString(36).slice(2);
  var body = document.body, live = document.getElementById('live');
  var tok = document.getElementById('token'), actor = document.getElementById('actor');
  tok.value = sessionStorage.getItem('serin-token') || '';
  actor.value = sessionStorage.getItem('serin-actor') || '';
  tok.addEventListener('input', function(){ sessionStorage.setItem('serin-token', tok.value); });
  actor.addEventListener('input', function(){ sessionStorage.setItem('serin-actor', actor.value); });
  body.dataset.updates = '0';
  var overview = body.dataset.view === 'overview';
  var timer = null, full = false, dirty = {};
  function bump(){ body.dataset.updates = String(Number(body.dataset.updates) + 1); }
  function get(url, then){
    return fetch(url, {cache: 'no-store'})
      .then(function(r){ return r.text().then(function(t){ then(r, t); }); })
      .catch(function(){});
  }
  function rowOf(k){ return document.querySelector('tr[data-canary="' + CSS.escape(k) + '"]'); }
  // The overview applies each Canary's change to its own row and refreshes only the counts;
  // it re-renders its page (at most one page of rows) only when a row must appear or go.
  function flush(){
    timer = null;
    if (!overview || full) {
      full = false; dirty = {};
      get(body.dataset.partial, function(r, html){
        if (!r.ok) return;
        document.getElementById('content').innerHTML = html;
        bump();
      });
      return;
    }
    var keys = Object.keys(dirty), jobs = [];
    var changed = dirty; dirty = {};
    keys.forEach(function(k){
      var c = changed[k];
      jobs.push(get(body.dataset.rows + encodeURIComponent(c[0]) + '/' + encodeURIComponent(c[1]), function(r, html){
        var row = rowOf(k);
        if (!row) return;
        if (r.status === 404) { row.remove(); return; }
        if (!r.ok) return;
        var t = document.createElement('tbody');
        t.innerHTML = html;
        row.replaceWith(t.firstElementChild);
      }));
    });
    jobs.push(get(body.dataset.counts, function(r, html){
      var s = document.getElementById('summary');
      if (r.ok && s) s.outerHTML = html;
    }));
    Promise.all(jobs).then(bump);
  }
  function schedule(){ if (!timer) timer = setTimeout(flush, 150); }
  function changed(e){
    if (!overview) { full = true; schedule(); return; }
    var d = {};
    try { d = JSON.parse(e.data); } catch (x) {}
    var c = d.canary || d, k = (c.namespace || '') + '/' + (c.name || '');
    var rows = document.querySelectorAll('tr[data-canary]').length;
    if (rowOf(k) && e.type === 'canary') dirty[k] = [c.namespace, c.name];
    else if (rowOf(k) || rows < Number(body.dataset.pageSize)) full = true;
    schedule();
  }
  var es = new EventSource(body.dataset.events);
  // Every `hello` (the first, and each after a reconnect) refetches what is shown: changes made
  // between the page's render and the subscription, or while the connection was down (a
  // controller restart, a dropped network), were never sent to this page.
  es.addEventListener('hello', function(){ live.textContent = 'live'; live.className = 'on'; body.dataset.live = '1'; full = true; schedule(); });
  ['canary', 'removed'].forEach(function(n){ es.addEventListener(n, changed); });
  es.addEventListener('entry', function(){ if (!overview) { full = true; schedule(); } });
  es.addEventListener('resync', function(){ full = true; schedule(); });
  es.onerror = function(){ live.textContent = 'reconnecting…'; live.className = ''; body.dataset.live = '0'; };
  document.querySelectorAll('button[data-action]').forEach(function(b){
    b.addEventListener('click', function(){
      var action = b.dataset.action, out = document.getElementById('action-result');
      var headers = {'Content-Type': 'application/json'};
      if (tok.value) headers['Authorization'] = 'Bearer ' + tok.value;
      var payload = {by: actor.value || 'dashboard'};
      if (action.indexOf('gate-') === 0) payload.gate = document.getElementById('gate').value;
      out.textContent = action + '…'; out.className = '';
      fetch(body.dataset.actions + action, {method: 'POST', headers: headers, body: JSON.stringify(payload)})
        .then(function(r){ return r.json().catch(function(){ return {}; }).then(function(j){
          out.dataset.status = String(r.status);
          if (r.ok) { out.textContent = 'accepted: ' + action + ' recorded by ' + j.command.by; out.className = 'ok'; }
          else { out.textContent = 'refused (' + r.status + '): ' + (j.message || r.statusText); out.className = 'err'; }
        }); })
        .catch(function(e){ out.textContent = 'failed: ' + e; out.className = 'err'; });
    });
  });
})();
"#;

fn document(title: &str, attrs: &str, head: &str, content: &str, extra: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title><style>{STYLE}</style></head><body {attrs}>{head}<main>{extra}<div id=\"content\">{content}</div></main><script>{SCRIPT}</script></body></html>",
        title = esc(title),
    )
}

/// The overview page: counts by phase, the filter form, one page of rows and the pager.
pub fn overview_page(listing: &Listing, query: &ListQuery, actions_enabled: bool) -> String {
    let qs = query_string(query, None, None);
    document(
        "Serin — canaries",
        &format!(
            r#"data-view="overview" data-partial="/partials/overview{qs}" data-counts="/partials/overview/counts{qs}" data-rows="/partials/overview/rows/" data-page-size="{PAGE_SIZE}" data-events="/api/v1/events""#,
            qs = esc(&qs)
        ),
        &header(actions_enabled, false),
        &overview_content(listing, query),
        &filter_form(listing, query),
    )
}

/// `?phase=..&namespace=..&q=..&page=..` for `query`, with the phase and the page replaced
/// when given (`Some(None)`: no phase).
fn query_string(query: &ListQuery, phase: Option<Option<Phase>>, page: Option<usize>) -> String {
    let mut parts = Vec::new();
    if let Some(p) = phase.unwrap_or(query.phase) {
        parts.push(format!("phase={}", p.as_str()));
    }
    if let Some(ns) = &query.namespace {
        parts.push(format!("namespace={}", seg(ns)));
    }
    if let Some(q) = &query.search {
        parts.push(format!("q={}", seg(q)));
    }
    let page = page.unwrap_or(query.offset / PAGE_SIZE + 1);
    if page > 1 {
        parts.push(format!("page={page}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The filter form (outside the live-swapped content, so typing is never interrupted).
fn filter_form(listing: &Listing, query: &ListQuery) -> String {
    let mut phases = String::from(r#"<option value="">every phase</option>"#);
    for p in Phase::ALL {
        let _ = write!(
            phases,
            r#"<option value="{p}"{sel}>{p}</option>"#,
            p = p.as_str(),
            sel = if query.phase == Some(p) {
                " selected"
            } else {
                ""
            }
        );
    }
    let mut namespaces = String::from(r#"<option value="">every namespace</option>"#);
    for ns in &listing.namespaces {
        let _ = write!(
            namespaces,
            r#"<option value="{v}"{sel}>{v}</option>"#,
            v = esc(ns),
            sel = if query.namespace.as_ref() == Some(ns) {
                " selected"
            } else {
                ""
            }
        );
    }
    format!(
        r#"<form id="filter" class="filter" method="get" action="/"><select name="phase" aria-label="phase">{phases}</select><select name="namespace" aria-label="namespace">{namespaces}</select><input type="search" name="q" id="search" placeholder="search name or target" aria-label="search" value="{q}"><button type="submit">Filter</button>{clear}</form>"#,
        q = esc(query.search.as_deref().unwrap_or("")),
        clear = if query.is_filtered() {
            r#" <a href="/">clear</a>"#
        } else {
            ""
        },
    )
}

/// Counts by phase (each links to that phase's filter) and how many match.
pub fn overview_summary(listing: &Listing, query: &ListQuery) -> String {
    let all: usize = listing.counts.values().sum();
    let mut out = format!(
        r#"<div id="summary" class="summary" data-total="{total}"><a class="count{active}" data-phase="" href="/{href}">all <b>{all}</b></a>"#,
        total = listing.total,
        active = if query.phase.is_none() { " active" } else { "" },
        href = esc(&query_string(query, Some(None), Some(1))),
    );
    for (phase, n) in &listing.counts {
        let _ = write!(
            out,
            r#"<a class="count p-{p}{active}" data-phase="{p}" href="/{href}">{p} <b>{n}</b></a>"#,
            p = phase.as_str(),
            active = if query.phase == Some(*phase) {
                " active"
            } else {
                ""
            },
            href = esc(&query_string(query, Some(Some(*phase)), Some(1))),
        );
    }
    out.push_str("</div>");
    out
}

/// The live-swapped part of the overview: counts, the page's rows and the pager.
pub fn overview_content(listing: &Listing, query: &ListQuery) -> String {
    let mut out = overview_summary(listing, query);
    if listing.total == 0 && !query.is_filtered() {
        out.push_str(r#"<p class="muted" id="empty">No canaries yet.</p>"#);
        return out;
    }
    if listing.items.is_empty() {
        out.push_str(r#"<p class="muted" id="empty">No canary matches.</p>"#);
    } else {
        out.push_str(&overview_table(&listing.items));
    }
    let pages = listing.total.div_ceil(PAGE_SIZE).max(1);
    let page = query.offset / PAGE_SIZE + 1;
    if pages > 1 {
        let first = query.offset + 1;
        let last = (query.offset + listing.items.len()).max(first);
        let link = |p: usize, rel: &str, text: &str| {
            format!(
                r#"<a rel="{rel}" href="/{}">{text}</a>"#,
                esc(&query_string(query, None, Some(p)))
            )
        };
        let _ = write!(
            out,
            r#"<nav class="pager" data-page="{page}" data-pages="{pages}">{prev} <span>{first}–{last} of {total} · page {page} of {pages}</span> {next}</nav>"#,
            prev = if page > 1 {
                link(page - 1, "prev", "← previous")
            } else {
                String::new()
            },
            next = if page < pages {
                link(page + 1, "next", "next →")
            } else {
                String::new()
            },
            total = listing.total,
        );
    }
    out
}

fn phase_badge(phase: &str) -> String {
    format!(r#"<span class="phase p-{p}">{p}</span>"#, p = esc(phase))
}

fn weight_bar(weight: u32) -> String {
    format!(
        r#"<span class="bar"><i style="width:{w}%"></i></span>{w}%"#,
        w = weight.min(100)
    )
}

fn waiting_text(s: &CanarySummary) -> Option<String> {
    s.waiting.as_ref().map(|w| {
        let what = match w.reason {
            WaitReason::Paused => "paused",
            WaitReason::ConfirmRollout => "waiting for confirm-rollout",
            WaitReason::ConfirmTrafficIncrease => "waiting for confirm-traffic-increase",
            WaitReason::ConfirmPromotion => "waiting for confirm-promotion",
        };
        match &w.message {
            Some(m) => format!("{what}: {m}"),
            None => what.to_string(),
        }
    })
}

/// The rows of one page.
fn overview_table(items: &[CanarySummary]) -> String {
    let mut out = String::from(
        r#"<table id="canaries"><thead><tr><th>Namespace</th><th>Name</th><th>Target</th><th>Phase</th><th>Weight</th><th>Failed checks</th><th>Revision in flight</th><th>Promoted</th><th>Last transition</th></tr></thead><tbody>"#,
    );
    for s in items {
        out.push_str(&overview_row(s));
    }
    out.push_str("</tbody></table>");
    out
}

/// One row of the overview (swapped in alone when that Canary changes).
pub fn overview_row(s: &CanarySummary) -> String {
    let in_flight = s.revision_in_flight().unwrap_or("—");
    let note = waiting_text(s)
        .map(|w| format!(r#"<div class="waiting">{}</div>"#, esc(&w)))
        .unwrap_or_default();
    format!(
        r#"<tr data-canary="{key}"><td>{ns}</td><td class="name"><a href="/canaries/{ns_seg}/{name_seg}">{name}</a></td><td>{kind}/{target}</td><td class="phase-cell">{phase}{note}</td><td class="weight">{weight}</td><td class="failed">{failed}</td><td class="revision">{rev}</td><td>{promoted}</td><td>{at}</td></tr>"#,
        key = esc(&s.key().to_string()),
        ns = esc(&s.namespace),
        name = esc(&s.name),
        ns_seg = seg(&s.namespace),
        name_seg = seg(&s.name),
        kind = esc(&s.target.kind),
        target = esc(&s.target.name),
        phase = phase_badge(s.phase.as_str()),
        weight = weight_bar(s.canary_weight),
        failed = s.failed_checks,
        rev = esc(in_flight),
        promoted = esc(s.promoted_revision.as_deref().unwrap_or("—")),
        at = time(s.last_transition_time),
    )
}

/// The detail page of one Canary.
pub fn detail_page(detail: &CanaryDetail, series: &Series, actions_enabled: bool) -> String {
    let s = &detail.canary;
    let base = format!("/canaries/{}/{}", seg(&s.namespace), seg(&s.name));
    let attrs = format!(
        r#"data-view="detail" data-partial="/partials{base}" data-events="/api/v1/events?namespace={ns}&amp;name={name}" data-actions="/api/v1{base}/actions/""#,
        ns = seg(&s.namespace),
        name = seg(&s.name),
    );
    let mut actions = String::from(r#"<div class="actions" id="actions">"#);
    for a in Action::ALL {
        let label = match a {
            Action::Promote => "Promote",
            Action::Abort => "Abort",
            Action::Pause => "Pause",
            Action::Resume => "Resume",
            Action::GateOpen => "Open gate",
            Action::GateClose => "Close gate",
        };
        let _ = write!(
            actions,
            r#"<button type="button" data-action="{a}">{label}</button>"#
        );
    }
    actions.push_str(r#"<select id="gate" aria-label="gate"><option value="confirm">confirm gate</option><option value="rollback">rollback gate</option></select><span id="action-result" role="status"></span></div>"#);
    document(
        &format!("Serin — {}", s.key()),
        &attrs,
        &header(actions_enabled, true),
        &detail_body(detail, series),
        &format!(
            r#"<h2 id="title">{}</h2>{actions}"#,
            esc(&s.key().to_string())
        ),
    )
}

fn outcome_text(run: &RunSummary) -> String {
    match &run.outcome {
        None => r#"<span class="phase p-Progressing">in flight</span>"#.to_string(),
        Some(o) => {
            let (label, class) = match o.result {
                RunResult::Promoted => ("promoted", "Succeeded"),
                RunResult::RolledBack => ("rolled back", "Failed"),
                RunResult::Aborted => ("aborted", "Failed"),
                RunResult::Superseded => ("superseded", "Terminated"),
            };
            format!(
                r#"<span class="phase p-{class}">{label}</span> <span class="reason">{}</span>"#,
                esc(&o.reason)
            )
        }
    }
}

/// `serin plan`'s figures for the Canary's schedule: what its judge can prove at each traffic
/// level, so a user sees before (or during) a rollout whether it can ever end by evidence.
fn plan_card(plan: &PlanInfo) -> String {
    let mut rows = String::new();
    for l in &plan.lines {
        let median = |m: &Option<String>| {
            m.as_deref()
                .map(|m| format!(" in {}", esc(m)))
                .unwrap_or_default()
        };
        let _ = write!(
            rows,
            r#"<tr data-rps="{rps}"><td>{rps}</td><td>{hp:.0}%{hm}</td><td>{rf:.0}%{rm}</td><td>{inc:.0}%</td><td>{summary}</td></tr>"#,
            rps = l.rps,
            hp = l.healthy_promoted_pct,
            hm = median(&l.healthy_to_promote),
            rf = l.regression_failed_pct,
            rm = median(&l.regression_to_fail),
            inc = l.inconclusive_pct,
            summary = esc(&l.summary),
        );
    }
    format!(
        r#"<div class="card" id="plan"><h3>What the judge can prove on this schedule</h3><p class="muted">Simulated rollouts ({trials} per line, primary error rate {err}%) through the real judge, as <code>serin plan</code> prints them.</p><table><thead><tr><th>requests/s</th><th>healthy canary promoted</th><th>2x error rate rolled back</th><th>ended by onInconclusive</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>"#,
        trials = plan.trials,
        err = plan.error_rate_pct,
    )
}

/// The detail fragment: summary, charts, timeline (swapped in on live updates).
pub fn detail_body(detail: &CanaryDetail, series: &Series) -> String {
    let s = &detail.canary;
    let mut out = String::new();
    let threshold = detail
        .analysis
        .as_ref()
        .and_then(|a| a.threshold)
        .map(|t| format!(" of {t}"))
        .unwrap_or_default();
    let waiting = waiting_text(s)
        .map(|w| {
            format!(
                r#"<div><span>waiting for a person</span><b class="waiting">{}</b></div>"#,
                esc(&w)
            )
        })
        .unwrap_or_default();
    let _ = write!(
        out,
        r#"<div class="card" id="summary"><div class="kv"><div><span>phase</span><b id="phase">{phase}</b></div><div><span>canary weight</span>{weight}</div><div><span>failed checks</span><b id="failed">{failed}{threshold}</b></div><div><span>target</span>{kind}/{target}</div><div><span>revision in flight</span><b id="revision">{rev}</b></div><div><span>promoted revision</span>{promoted}</div><div><span>target revision</span>{target_rev}</div><div><span>last transition</span>{at}</div><div><span>gates</span>confirm: {confirm}, rollback: {rollback}</div>{waiting}</div>{message}</div>"#,
        phase = phase_badge(s.phase.as_str()),
        weight = weight_bar(s.canary_weight),
        failed = s.failed_checks,
        kind = esc(&s.target.kind),
        target = esc(&s.target.name),
        rev = esc(s.revision_in_flight().unwrap_or("—")),
        promoted = esc(s.promoted_revision.as_deref().unwrap_or("—")),
        target_rev = esc(s.target_revision.as_deref().unwrap_or("—")),
        at = time(s.last_transition_time),
        confirm = if s.gates.confirm { "open" } else { "closed" },
        rollback = if s.gates.rollback { "open" } else { "closed" },
        message = s
            .message
            .as_ref()
            .map(|m| format!(r#"<p class="muted" id="message">{}</p>"#, esc(m)))
            .unwrap_or_default(),
    );
    out.push_str(&charts(series));
    if let Some(plan) = detail.analysis.as_ref().and_then(|a| a.plan.as_ref()) {
        out.push_str(&plan_card(plan));
    }
    if detail.runs.is_empty() {
        out.push_str(
            r#"<p class="muted">No runs yet: the primary serves the promoted revision.</p>"#,
        );
    }
    for run in &detail.runs {
        let _ = write!(
            out,
            r#"<section class="run" data-run="{id}"><h3>Run #{id} · revision {rev} · started {start} · {outcome}</h3>"#,
            id = run.run.id,
            rev = esc(&run.run.revision),
            start = time(Some(run.run.started_at)),
            outcome = outcome_text(&run.run),
        );
        out.push_str(&timeline(&run.timeline));
        out.push_str("</section>");
    }
    if !detail.other.is_empty() {
        out.push_str(r#"<section class="run" data-run="none"><h3>Outside runs</h3>"#);
        out.push_str(&timeline(&detail.other));
        out.push_str("</section>");
    }
    out
}

fn bounds(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(lo), Some(hi)) => format!("{}..{}", num(lo), num(hi)),
        (Some(lo), None) => format!("min {}", num(lo)),
        (None, Some(hi)) => format!("max {}", num(hi)),
        (None, None) => "no bound".to_string(),
    }
}

fn verdict(v: Verdict) -> String {
    format!(r#"<b class="{c}">{c}</b>"#, c = v.as_str())
}

fn describe(entry: &HistoryEntry) -> (String, String) {
    match &entry.kind {
        EntryKind::RunStarted {
            revision,
            previous_revision,
        } => (
            "run started".into(),
            format!(
                "revision {} (primary serves {})",
                esc(revision),
                esc(previous_revision.as_deref().unwrap_or("—"))
            ),
        ),
        EntryKind::Phase { from, to, message } => (
            "phase".into(),
            format!(
                "{} → {}{}",
                from.map_or_else(|| "—".to_string(), |p| p.to_string()),
                phase_badge(to.as_str()),
                message
                    .as_ref()
                    .map(|m| format!(" <span class=\"muted\">{}</span>", esc(m)))
                    .unwrap_or_default()
            ),
        ),
        EntryKind::Weight {
            from,
            to,
            iteration,
        } => (
            "step".into(),
            format!(
                "canary weight {from}% → <b>{to}%</b>{}",
                iteration
                    .map(|i| format!(" (iteration {i})"))
                    .unwrap_or_default()
            ),
        ),
        EntryKind::Check {
            name,
            verdict: v,
            value,
            min,
            max,
            sample_size,
            failed_checks,
            message,
        } => (
            "check".into(),
            format!(
                "{name}: measured <b>{value}</b> vs {bounds} → {v}{samples}{failed}{msg}",
                name = esc(name),
                value = value.map_or_else(|| "no data".to_string(), num),
                bounds = bounds(*min, *max),
                v = verdict(*v),
                samples = sample_size
                    .map(|n| format!(" <span class=\"muted\">({n} requests)</span>"))
                    .unwrap_or_default(),
                failed = failed_checks
                    .map(|n| format!(" · failed checks {n}"))
                    .unwrap_or_default(),
                msg = message
                    .as_ref()
                    .map(|m| format!(" <span class=\"muted\">{}</span>", esc(m)))
                    .unwrap_or_default(),
            ),
        ),
        EntryKind::Judge {
            verdict: v,
            evidence,
            canary_requests,
            primary_requests,
            message,
        } => {
            let mut ev = String::new();
            for e in evidence {
                let _ = write!(
                    ev,
                    "<li>{}: canary {} vs primary {}{}{}{}{} → {}{}</li>",
                    esc(&e.metric),
                    num(e.canary),
                    num(e.primary),
                    e.tolerance
                        .map(|t| format!(", tolerance {}", num(t)))
                        .unwrap_or_default(),
                    e.margin
                        .map(|m| format!(", margin {}", num(m)))
                        .unwrap_or_default(),
                    e.p_value
                        .map(|p| format!(", p = {p:.2e}"))
                        .unwrap_or_default(),
                    e.alpha
                        .map(|a| format!(" (alpha {})", num(a)))
                        .unwrap_or_default(),
                    verdict(e.verdict),
                    e.claim
                        .as_ref()
                        .map(|c| format!(" <span class=\"muted\">{}</span>", esc(c)))
                        .unwrap_or_default()
                );
            }
            (
                "judge".into(),
                format!(
                    "statistical judge → {}{} <span class=\"muted\">({canary_requests} canary / {primary_requests} primary requests)</span><ul>{ev}</ul>",
                    verdict(*v),
                    message
                        .as_ref()
                        .map(|m| format!(": {}", esc(m)))
                        .unwrap_or_default(),
                ),
            )
        }
        EntryKind::Webhook {
            name,
            webhook_type,
            ok,
            status,
            message,
            duration_ms,
        } => (
            "webhook".into(),
            format!(
                "{} ({}) → <b class=\"{}\">{}</b>{}{}{}",
                esc(name),
                esc(webhook_type),
                if *ok { "pass" } else { "fail" },
                if *ok { "ok" } else { "failed" },
                status.map(|s| format!(" HTTP {s}")).unwrap_or_default(),
                duration_ms
                    .map(|d| format!(" in {d} ms"))
                    .unwrap_or_default(),
                message
                    .as_ref()
                    .map(|m| format!(" <span class=\"muted\">{}</span>", esc(m)))
                    .unwrap_or_default(),
            ),
        ),
        EntryKind::Event { severity, message } => (
            "event".into(),
            format!(
                "<b class=\"{}\">{}</b> {}",
                match severity {
                    Severity::Info => "muted",
                    Severity::Warn => "inconclusive",
                    Severity::Error => "fail",
                },
                match severity {
                    Severity::Info => "info",
                    Severity::Warn => "warn",
                    Severity::Error => "error",
                },
                esc(message)
            ),
        ),
        EntryKind::Command {
            action,
            gate,
            by,
            state,
            message,
            ..
        } => (
            "command".into(),
            format!(
                "<b>{action}</b>{} by <b class=\"by\">{}</b> · {}{}",
                gate.as_ref()
                    .map(|g| format!(" ({} gate)", esc(g)))
                    .unwrap_or_default(),
                esc(by),
                match state {
                    crate::model::CommandState::Received => "received",
                    crate::model::CommandState::Applied => "applied",
                    crate::model::CommandState::Rejected => "rejected",
                },
                message
                    .as_ref()
                    .map(|m| format!(" <span class=\"muted\">{}</span>", esc(m)))
                    .unwrap_or_default(),
            ),
        ),
        EntryKind::Sample {
            weight,
            canary,
            primary,
        } => (
            "sample".into(),
            format!(
                "weight {weight}%: canary {} req, primary {} req",
                canary.requests, primary.requests
            ),
        ),
        EntryKind::RunEnded { outcome } => (
            "run ended".into(),
            format!(
                "<b class=\"{}\">{}</b>: {}",
                if outcome.result.is_success() {
                    "pass"
                } else {
                    "fail"
                },
                match outcome.result {
                    RunResult::Promoted => "promoted",
                    RunResult::RolledBack => "rolled back",
                    RunResult::Aborted => "aborted",
                    RunResult::Superseded => "superseded",
                },
                esc(&outcome.reason)
            ),
        ),
    }
}

fn timeline(entries: &[HistoryEntry]) -> String {
    let mut out = String::from(r#"<table class="timeline"><tbody>"#);
    for e in entries.iter().rev() {
        let (label, text) = describe(e);
        let _ = write!(
            out,
            r#"<tr data-type="{t}"><td class="muted" style="white-space:nowrap">{at}</td><td style="white-space:nowrap">{label}</td><td>{text}</td></tr>"#,
            t = e.kind.type_name(),
            at = time(Some(e.at)),
            label = esc(&label),
        );
    }
    out.push_str("</tbody></table>");
    out
}

// ---------------------------------------------------------------------------------------------
// Charts

struct Line<'a> {
    label: &'a str,
    color: &'a str,
    points: Vec<(i64, Option<f64>)>,
    step: bool,
}

const W: f64 = 360.0;
const H: f64 = 170.0;
const PAD_L: f64 = 44.0;

/// The smallest of 1, 2, 2.5, 5 times a power of ten at or above `v`, so the axis label stays
/// short (`25ms`, not `20.24ms`) and fits the left margin.
fn nice_ceil(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return v;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|c| *c >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag)
}
const PAD_R: f64 = 10.0;
const PAD_T: f64 = 26.0;
const PAD_B: f64 = 24.0;

fn chart(
    id: &str,
    title: &str,
    unit: &str,
    lines: &[Line<'_>],
    fixed: Option<(f64, f64)>,
) -> String {
    let xs: Vec<i64> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = lines
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|p| p.1))
        .collect();
    let mut svg = format!(
        r##"<svg class="chart" data-chart="{id}" role="img" aria-label="{t}" width="{W}" height="{H}" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg"><text x="8" y="16" font-size="12" font-weight="600" fill="#344054">{t}</text>"##,
        t = esc(title)
    );
    // Legend, right-aligned.
    let mut lx = W - PAD_R;
    for l in lines.iter().rev() {
        lx -= 8.0 + 6.5 * l.label.len() as f64;
        let _ = write!(
            svg,
            r##"<rect x="{lx}" y="8" width="8" height="8" fill="{c}"/><text x="{tx}" y="16" font-size="11" fill="#475467">{lab}</text>"##,
            c = l.color,
            tx = lx + 11.0,
            lab = esc(l.label)
        );
        lx -= 8.0;
    }
    if ys.is_empty() || xs.is_empty() {
        let _ = write!(
            svg,
            r##"<text x="{x}" y="{y}" font-size="12" fill="#98a2b3" text-anchor="middle">no samples yet</text></svg>"##,
            x = W / 2.0,
            y = H / 2.0 + 6.0
        );
        return svg;
    }
    let (x0, mut x1) = (
        *xs.iter().min().unwrap_or(&0),
        *xs.iter().max().unwrap_or(&0),
    );
    if x1 == x0 {
        x1 = x0 + 1;
    }
    let (mut y0, mut y1) = fixed.unwrap_or_else(|| {
        let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo.min(0.0), nice_ceil(hi * 1.1))
    });
    if (y1 - y0).abs() < f64::EPSILON {
        y0 -= 1.0;
        y1 += 1.0;
    }
    let px = |x: i64| PAD_L + (x - x0) as f64 / (x1 - x0) as f64 * (W - PAD_L - PAD_R);
    let py = |y: f64| H - PAD_B - (y.clamp(y0, y1) - y0) / (y1 - y0) * (H - PAD_T - PAD_B);
    // Axes and labels.
    let _ = write!(
        svg,
        r##"<line x1="{PAD_L}" y1="{t}" x2="{PAD_L}" y2="{b}" stroke="#d0d5dd"/><line x1="{PAD_L}" y1="{b}" x2="{r}" y2="{b}" stroke="#d0d5dd"/><text x="{lx}" y="{ty}" font-size="10" fill="#667085" text-anchor="end">{hi}{unit}</text><text x="{lx}" y="{by}" font-size="10" fill="#667085" text-anchor="end">{lo}{unit}</text><text x="{PAD_L}" y="{ly}" font-size="10" fill="#667085">{start}</text><text x="{r}" y="{ly}" font-size="10" fill="#667085" text-anchor="end">{end}</text>"##,
        t = PAD_T,
        b = H - PAD_B,
        r = W - PAD_R,
        lx = PAD_L - 4.0,
        ty = PAD_T + 4.0,
        by = H - PAD_B,
        ly = H - 8.0,
        hi = num(y1),
        lo = num(y0),
        unit = esc(unit),
        start = clock(Timestamp::from_millisecond(x0).unwrap_or_default()),
        end = clock(Timestamp::from_millisecond(x1).unwrap_or_default()),
    );
    for l in lines {
        // A gap (no data) splits the line into segments.
        let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(x, y) in &l.points {
            match y {
                Some(y) => {
                    let seg = segments.last_mut().expect("segments is never empty");
                    if l.step
                        && let Some(&(_, prev_y)) = seg.last()
                    {
                        seg.push((px(x), prev_y));
                    }
                    seg.push((px(x), py(y)));
                }
                None => segments.push(Vec::new()),
            }
        }
        for seg in segments.iter().filter(|s| !s.is_empty()) {
            let pts: Vec<String> = seg.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = write!(
                svg,
                r#"<polyline class="series" data-series="{lab}" fill="none" stroke="{c}" stroke-width="2" points="{p}"/>"#,
                lab = esc(l.label),
                c = l.color,
                p = pts.join(" ")
            );
            if seg.len() == 1 {
                let (x, y) = seg[0];
                let _ = write!(
                    svg,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{}"/>"#,
                    l.color
                );
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The three charts of a run: weight, success rate and p99 latency, canary against primary.
pub fn charts(series: &Series) -> String {
    let at = |p: &crate::model::SeriesPoint| p.at.as_millisecond();
    let pts = &series.points;
    let weight = [Line {
        label: "canary weight",
        color: "#7a5af8",
        points: pts
            .iter()
            .map(|p| (at(p), Some(f64::from(p.weight))))
            .collect(),
        step: true,
    }];
    let success = [
        Line {
            label: "canary",
            color: "#f79009",
            points: pts.iter().map(|p| (at(p), p.canary.success_rate)).collect(),
            step: false,
        },
        Line {
            label: "primary",
            color: "#2e90fa",
            points: pts
                .iter()
                .map(|p| (at(p), p.primary.success_rate))
                .collect(),
            step: false,
        },
    ];
    let latency = [
        Line {
            label: "canary",
            color: "#f79009",
            points: pts
                .iter()
                .map(|p| (at(p), p.canary.latency_p99_ms))
                .collect(),
            step: false,
        },
        Line {
            label: "primary",
            color: "#2e90fa",
            points: pts
                .iter()
                .map(|p| (at(p), p.primary.latency_p99_ms))
                .collect(),
            step: false,
        },
    ];
    // Success rate: zoom to the interesting band but never hide a collapse.
    let lowest = success
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|p| p.1))
        .fold(100.0f64, f64::min);
    let floor = if lowest >= 90.0 {
        90.0
    } else {
        (lowest / 10.0).floor() * 10.0
    };
    format!(
        r#"<div class="charts" id="charts">{}{}{}</div>"#,
        chart("weight", "Canary weight", "%", &weight, Some((0.0, 100.0))),
        chart(
            "success",
            "Success rate",
            "%",
            &success,
            Some((floor, 100.0))
        ),
        chart("latency", "Latency p99", "ms", &latency, None),
    )
}

/// A minimal error page.
pub fn error_page(status: u16, message: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Serin — {status}</title><style>{STYLE}</style></head><body><header><h1><a href=\"/\">Serin</a></h1></header><main><h2>{status}</h2><p id=\"error\">{}</p><p><a href=\"/\">all canaries</a></p></main></body></html>",
        esc(message)
    )
}

#[cfg(test)]
mod tests {
    use super::nice_ceil;

    #[test]
    fn chart_maxima_round_up_to_short_labels() {
        assert_eq!(nice_ceil(20.24), 25.0);
        assert_eq!(nice_ceil(110.0), 200.0);
        assert_eq!(nice_ceil(4.9), 5.0);
        assert_eq!(nice_ceil(0.31), 0.5);
        assert_eq!(nice_ceil(100.0), 100.0);
        assert_eq!(nice_ceil(0.0), 0.0);
    }
}
