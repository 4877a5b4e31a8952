//! serin-analysis's integration tests, one binary with a module per provider or topic.

mod common;

mod cloudwatch_splunk;
mod datadog;
mod graphite;
mod influxdb;
mod judge_validity;
mod newrelic_dynatrace;
mod prometheus;
mod prometheus_answers;
mod proxy_scrape;
