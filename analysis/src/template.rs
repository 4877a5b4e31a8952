//! `MetricTemplate` query rendering with Flagger's template variables.
//!
//! Flagger renders queries with Go templates where each variable is a function:
//! `{{ name }}`, `{{ namespace }}`, `{{ target }}`, `{{ service }}`, `{{ ingress }}`,
//! `{{ route }}`, `{{ interval }}` and `{{ variables.<key> }}` (from the metric's
//! `templateVariables`).
//! Serin accepts exactly that subset (plus Go's `{{-` / `-}}` whitespace trimming) and refuses
//! anything else with an error naming the variable, instead of sending a half-rendered query.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::AnalysisError;
use crate::duration::format_duration;

/// The values a query template can refer to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TemplateContext {
    /// `canary.metadata.name`.
    pub name: String,
    /// `canary.metadata.namespace`.
    pub namespace: String,
    /// `canary.spec.targetRef.name`.
    pub target: String,
    /// `canary.spec.service.name` (defaults to the target name in Flagger).
    pub service: String,
    /// `canary.spec.ingressRef.name`, when the Canary has one; `{{ ingress }}` is the target
    /// name otherwise, as in Flagger.
    pub ingress: Option<String>,
    /// `canary.spec.routeRef.name` (APISIX), when the Canary has one; `{{ route }}` is the
    /// target name otherwise, as in Flagger.
    pub route: Option<String>,
    /// The metric's `interval`, rendered as PromQL accepts it (`1m`).
    pub interval: Duration,
    /// The metric's `templateVariables`.
    pub variables: BTreeMap<String, String>,
}

impl TemplateContext {
    fn lookup(&self, name: &str) -> Option<String> {
        match name {
            "name" => Some(self.name.clone()),
            "namespace" => Some(self.namespace.clone()),
            "target" => Some(self.target.clone()),
            "service" => Some(self.service.clone()),
            "ingress" => Some(self.ingress.clone().unwrap_or_else(|| self.target.clone())),
            "route" => Some(self.route.clone().unwrap_or_else(|| self.target.clone())),
            "interval" => Some(format_duration(self.interval)),
            other => other
                .strip_prefix("variables.")
                .and_then(|key| self.variables.get(key).cloned()),
        }
    }

    fn known(&self) -> String {
        let mut names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
        names.extend(self.variables.keys().map(|k| format!("variables.{k}")));
        names.join(", ")
    }
}

/// Flagger's template variables besides `variables.<key>`.
const NAMES: [&str; 7] = [
    "name",
    "namespace",
    "target",
    "service",
    "ingress",
    "route",
    "interval",
];

/// Renders `template` with `ctx`. Every `{{ ... }}` must be one known variable.
pub fn render(template: &str, ctx: &TemplateContext) -> Result<String, AnalysisError> {
    render_with(template, |name| ctx.lookup(name), || ctx.known())
}

/// Checks `template` before any Canary uses it (`serin validate`): well-formed, and every
/// `{{ ... }}` a variable Flagger defines (`{{ variables.<key> }}` with any key: which keys a
/// Canary's `templateVariables` gives is only known with the Canary).
pub fn check(template: &str) -> Result<(), AnalysisError> {
    render_with(
        template,
        |name| {
            let known = NAMES.contains(&name)
                || name
                    .strip_prefix("variables.")
                    .is_some_and(|key| !key.is_empty());
            known.then(String::new)
        },
        || format!("{}, variables.<key>", NAMES.join(", ")),
    )
    .map(drop)
}

fn render_with(
    template: &str,
    lookup: impl Fn(&str) -> Option<String>,
    known: impl Fn() -> String,
) -> Result<String, AnalysisError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        let mut literal = &rest[..open];
        let after_open = &rest[open + 2..];
        let (trim_left, inner_start) = match after_open.strip_prefix('-') {
            Some(s) if s.starts_with(char::is_whitespace) => (true, s),
            _ => (false, after_open),
        };
        let Some(close) = inner_start.find("}}") else {
            return Err(AnalysisError::Template {
                offset: offset + open,
                message: "`{{` is never closed by `}}`".into(),
            });
        };
        let mut inner = &inner_start[..close];
        let mut trim_right = false;
        if let Some(s) = inner.strip_suffix('-')
            && s.ends_with(char::is_whitespace)
        {
            inner = s;
            trim_right = true;
        }
        if trim_left {
            literal = literal.trim_end();
        }
        out.push_str(literal);
        let expr = inner.trim();
        if expr.is_empty() {
            return Err(AnalysisError::Template {
                offset: offset + open,
                message: "empty `{{ }}`".into(),
            });
        }
        let value = lookup(expr).ok_or_else(|| AnalysisError::UnknownVariable {
            name: expr.to_string(),
            known: known(),
        })?;
        out.push_str(&value);
        let consumed = open + 2 + (after_open.len() - inner_start.len()) + close + 2;
        rest = &rest[consumed..];
        offset += consumed;
        if trim_right {
            let trimmed = rest.trim_start();
            offset += rest.len() - trimmed.len();
            rest = trimmed;
        }
    }
    // A `}}` outside an action is text, as in Go's text/template: JSON queries (CloudWatch's
    // `...,"Stat": "p99"}}]`) end in it.
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_is_checked_without_a_canary() {
        check("sum(rate(x{ns=\"{{ namespace }}\",d=~\"{{ target }}\",z=\"{{variables.zone}}\"}[{{- interval -}}]))")
            .expect("Flagger's variables and any templateVariables key");
        let e = check("rate(x{a=\"{{ bogus }}\"}[1m])").expect_err("unknown");
        assert_eq!(e.kind(), "unknown_variable");
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(e.to_string().contains("variables.<key>"), "{e}");
        assert!(check("x{a=\"{{ variables. }}\"}").is_err(), "an empty key");
        assert_eq!(
            check("x{{ target").expect_err("unclosed").kind(),
            "template"
        );
    }

    fn ctx() -> TemplateContext {
        TemplateContext {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "podinfo-svc".into(),
            ingress: None,
            route: None,
            interval: Duration::from_secs(60),
            variables: BTreeMap::from([("region".to_string(), "eu-west-1".to_string())]),
        }
    }

    #[test]
    fn renders_every_flagger_variable() {
        let q = "sum(rate(x{ns=\"{{ namespace }}\",d=~\"{{ target }}\",s=\"{{service}}\",n=\"{{  name  }}\",r=\"{{ variables.region }}\"}[{{ interval }}]))";
        assert_eq!(
            render(q, &ctx()).unwrap(),
            "sum(rate(x{ns=\"test\",d=~\"podinfo\",s=\"podinfo-svc\",n=\"podinfo\",r=\"eu-west-1\"}[1m]))"
        );
    }

    #[test]
    fn renders_ingress_when_present_and_trims_like_go() {
        let mut c = ctx();
        c.ingress = Some("web".into());
        assert_eq!(render("a  {{- ingress -}}  b", &c).unwrap(), "awebb");
        assert_eq!(render("no placeholders", &c).unwrap(), "no placeholders");
    }

    #[test]
    fn ingress_and_route_default_to_the_target_as_in_flagger() {
        // Flagger renders {{ ingress }} and {{ route }} with the target's name unless the Canary
        // has an ingressRef / routeRef.
        assert_eq!(
            render("{{ ingress }} {{ route }}", &ctx()).unwrap(),
            "podinfo podinfo"
        );
        let mut c = ctx();
        c.ingress = Some("web".into());
        c.route = Some("web-route".into());
        assert_eq!(
            render("{{ ingress }} {{ route }}", &c).unwrap(),
            "web web-route"
        );
        let err = render("{{ nope }}", &ctx()).unwrap_err().to_string();
        assert!(err.contains("ingress") && err.contains("route"), "{err}");
    }

    #[test]
    fn unknown_variable_is_an_error_naming_it() {
        let err = render("x{a=\"{{ variables.zone }}\"}", &ctx()).unwrap_err();
        match &err {
            AnalysisError::UnknownVariable { name, known } => {
                assert_eq!(name, "variables.zone");
                assert!(known.contains("variables.region"), "{known}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("variables.zone"));
        let err = render("{{ .Namespace }}", &ctx()).unwrap_err();
        assert!(err.to_string().contains(".Namespace"), "{err}");
    }

    #[test]
    fn malformed_templates_are_errors_with_offsets() {
        let err = render("abc {{ name ", &ctx()).unwrap_err();
        assert!(
            matches!(err, AnalysisError::Template { offset: 4, .. }),
            "{err:?}"
        );
        let err = render("{{ }}", &ctx()).unwrap_err();
        assert!(
            matches!(err, AnalysisError::Template { offset: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_closing_pair_outside_an_action_is_text_as_in_go() {
        // Flagger's CloudWatch example: JSON whose objects close with `}}`.
        let q = r#"[{"Id": "l", "MetricStat": {"Metric": {"Namespace": "AWS/ELB", "MetricName": "Latency"}, "Period": 60, "Stat": "p99"}}]"#;
        assert_eq!(render(q, &ctx()).unwrap(), q);
        check(q).expect("a template without actions");
        assert_eq!(
            render(r#"{"a": {"b": "{{ name }}"}}"#, &ctx()).unwrap(),
            r#"{"a": {"b": "podinfo"}}"#
        );
    }
}
