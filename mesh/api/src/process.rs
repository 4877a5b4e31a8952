//! The usual `process_*` gauges (feature `process`), read from `/proc/self` on each scrape, so
//! every Serin binary exports the series dashboards build their namespace / deployment / pod
//! variables from (`process_start_time_seconds`) and plot memory and CPU with.
//!
//! Names, types and units are Prometheus' client conventions: CPU in seconds, memory in bytes,
//! start time in seconds since the Unix epoch. On a system without `/proc` the series are left
//! out (never reported as zero, which would read as a fresh, idle process).

use std::fmt::Write as _;

/// One reading of the process' figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors (`None`: unlimited).
    pub max_fds: Option<u64>,
    /// Threads.
    pub threads: u64,
}

impl ProcessStats {
    /// Reads `/proc/self`; `None` where it is not there or unreadable.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let mut s = Self::parse(
            &stat,
            &boot,
            &limits,
            rustix::param::clock_ticks_per_second(),
            rustix::param::page_size() as u64,
        )?;
        // The directory listing holds its own descriptor while it is read.
        s.open_fds = open_fds.saturating_sub(1);
        Some(s)
    }

    /// Parses the contents of `/proc/self/stat`, `/proc/stat` and `/proc/self/limits`.
    pub fn parse(stat: &str, boot: &str, limits: &str, ticks: u64, page: u64) -> Option<Self> {
        // The command name (field 2) is in parentheses and may hold spaces or ')': the fields
        // after it start behind the last ')'. `rest[0]` is field 3 (state).
        let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
        let ticks = ticks.max(1) as f64;
        let btime: u64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok());
        Some(ProcessStats {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            threads: field(20)?,
            start_time_seconds: btime as f64 + field(22)? as f64 / ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page,
            open_fds: 0,
            max_fds,
        })
    }

    /// The Prometheus text exposition of these figures; `labels` (already rendered as
    /// `k="v",...`, may be empty) go on every series.
    pub fn render(&self, labels: &str) -> String {
        let l = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let mut out = String::with_capacity(1024);
        let mut series = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{l} {value}"
            );
        };
        series(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds.to_string(),
        );
        series(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes.to_string(),
        );
        series(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.virtual_bytes.to_string(),
        );
        series(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds.to_string(),
        );
        series(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            self.open_fds.to_string(),
        );
        if let Some(max) = self.max_fds {
            series(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                max.to_string(),
            );
        }
        series(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            self.threads.to_string(),
        );
        out
    }
}

/// The `process_*` series of the running process (empty without `/proc`).
pub fn render(labels: &str) -> String {
    ProcessStats::read()
        .map(|s| s.render(labels))
        .unwrap_or_default()
}

/// The same series for a `prometheus-client` registry (feature `process-collector`), for the
/// binaries that export OpenMetrics through one: register it with
/// `registry.register_collector(Box::new(ProcessCollector))`.
#[cfg(feature = "process-collector")]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCollector;

#[cfg(feature = "process-collector")]
impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(s) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                s.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.virtual_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                s.open_fds as f64,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                s.threads as f64,
            ),
        ];
        let max = s.max_fds.map(|m| {
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                m as f64,
            )
        });
        for (name, help, value) in gauges.into_iter().chain(max) {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (serin (proxy) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 3 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn figures_come_from_the_fields_after_the_command_name() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        let s = ProcessStats::parse(STAT, "cpu 1 2 3\nbtime 1700000000\n", limits, 100, 4096)
            .expect("parses");
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.threads, 3);
        assert!((s.start_time_seconds - 1_700_000_123.45).abs() < 1e-3);
        assert_eq!(s.virtual_bytes, 104_857_600);
        assert_eq!(s.resident_bytes, 2560 * 4096);
        assert_eq!(s.max_fds, Some(1024));
        let text = s.render("pod=\"web-1\"");
        assert!(text.contains("process_start_time_seconds{pod=\"web-1\"} 1700000123.4"));
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
    }

    #[test]
    fn unlimited_descriptors_and_garbage_are_not_invented() {
        let limits = "Max open files            unlimited            unlimited            files\n";
        let s = ProcessStats::parse(STAT, "btime 1\n", limits, 100, 4096).expect("parses");
        assert_eq!(s.max_fds, None);
        assert!(!s.render("").contains("process_max_fds"));
        assert!(ProcessStats::parse("garbage", "btime 1\n", "", 100, 4096).is_none());
        assert!(ProcessStats::parse(STAT, "no boot time\n", "", 100, 4096).is_none());
    }

    #[test]
    fn this_process_reads_as_running_now() {
        let s = ProcessStats::read().expect("/proc is mounted on Linux");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        assert!(s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 86_400.0);
        assert!(s.resident_bytes > 0 && s.open_fds >= 3, "{s:?}");
    }

    #[cfg(feature = "process-collector")]
    #[test]
    fn the_collector_encodes_openmetrics_families() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
        assert!(
            out.contains("# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total "),
            "{out}"
        );
        assert!(out.contains("\nprocess_start_time_seconds "), "{out}");
    }
}
