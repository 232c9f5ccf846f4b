//! The `[metrics]` section: where shelfd exposes its Prometheus metrics (off by default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the metrics go. Both ways are off unless named; either or both may be used.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The HTTP listener: `ADDRESS:PORT` (an IP address, no host name), or the absolute
    /// path of a unix socket (mode 0660); empty: no listener. Only `GET /metrics` is served.
    pub listen: String,
    /// Allow a `listen` address that is not loopback. The metrics name the pools and show
    /// their sizes and the daemon's activity, and the listener has no authentication: an
    /// address other machines reach needs the operator to say so (and a firewall).
    pub allow_remote: bool,
    /// A file rewritten atomically (temporary file and rename, mode 0644) with the metrics,
    /// for node_exporter's textfile collector: an absolute path ending in `.prom`; empty:
    /// none.
    pub textfile: PathBuf,
    /// Seconds between rewrites of `textfile` (1 to 3600).
    pub textfile_interval: u64,
    /// HTTP scrapes served at once (1 to 64); a connection past it is answered 503 and
    /// closed.
    pub max_scrapes: usize,
    /// Seconds a scrape may take to send its request head, and again to read the reply
    /// (1 to 60).
    pub request_timeout: u64,
    /// Seconds an exposition is reused after its collection ended (0 to 300; 0: every
    /// scrape collects). A collection walks the database on its one thread, lists the jobs
    /// and reads every pool's usage (`lvs` on LVM), so a scraper in a loop could otherwise
    /// hold up writes; with it, any number of scrapes in `min_interval` cost one collection.
    pub min_interval: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: String::new(),
            allow_remote: false,
            textfile: PathBuf::new(),
            textfile_interval: 15,
            max_scrapes: 4,
            request_timeout: 5,
            min_interval: 1,
        }
    }
}

/// Where the listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsListen {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket's path.
    Unix(PathBuf),
}

impl MetricsConfig {
    /// The listener, if one is configured (the config was validated).
    pub fn listener(&self) -> Option<MetricsListen> {
        if self.listen.is_empty() {
            None
        } else if self.listen.starts_with('/') {
            Some(MetricsListen::Unix(PathBuf::from(&self.listen)))
        } else {
            self.listen.parse().ok().map(MetricsListen::Tcp)
        }
    }

    /// The textfile, if one is configured.
    pub fn textfile(&self) -> Option<&Path> {
        (!self.textfile.as_os_str().is_empty()).then_some(self.textfile.as_path())
    }

    /// Where the metrics go, for `--check-config`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.listener() {
            Some(MetricsListen::Tcp(a)) => parts.push(format!("http://{a}/metrics")),
            Some(MetricsListen::Unix(p)) => parts.push(format!("unix socket {}", p.display())),
            None => {}
        }
        if let Some(p) = self.textfile() {
            let every = self.textfile_interval;
            parts.push(format!("textfile {} every {every} s", p.display()));
        }
        if parts.is_empty() {
            "off".into()
        } else {
            parts.join(", ")
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if !self.listen.is_empty() && !self.listen.starts_with('/') {
            let addr: SocketAddr = self.listen.parse().map_err(|_| {
                format!(
                    "metrics.listen {:?} must be IP:PORT (e.g. 127.0.0.1:9469) or an absolute socket path",
                    self.listen
                )
            })?;
            if !addr.ip().is_loopback() && !self.allow_remote {
                return Err(format!(
                    "metrics.listen {addr} is not a loopback address: the metrics name your pools \
                     and their figures and the listener has no authentication; set \
                     metrics.allow_remote = true to serve them there (and firewall the port)"
                ));
            }
        }
        let tf = &self.textfile;
        if !tf.as_os_str().is_empty()
            && (!tf.is_absolute()
                || tf.extension().is_none_or(|e| e != "prom")
                || tf.components().any(|c| c.as_os_str() == ".."))
        {
            return Err(format!(
                "metrics.textfile {tf:?} must be an absolute path without `..` ending in .prom \
                 (node_exporter reads only *.prom)"
            ));
        }
        for (name, v, lo, hi) in [
            ("textfile_interval", self.textfile_interval, 1, 3600),
            ("max_scrapes", self.max_scrapes as u64, 1, 64),
            ("request_timeout", self.request_timeout, 1, 60),
            ("min_interval", self.min_interval, 0, 300),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(format!("metrics.{name} {v} must be between {lo} and {hi}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MetricsConfig, String> {
        let c: MetricsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map(|_| c)
    }

    #[test]
    fn off_by_default() {
        let c = parse("").unwrap();
        assert_eq!((c.listener(), c.textfile()), (None, None));
    }

    #[test]
    fn loopback_and_sockets_are_accepted() {
        let c = parse("listen = '127.0.0.1:9469'").unwrap();
        assert_eq!(
            c.listener(),
            Some(MetricsListen::Tcp("127.0.0.1:9469".parse().unwrap()))
        );
        assert!(parse("listen = '[::1]:9469'").is_ok());
        let c = parse("listen = '/run/shelf/metrics.sock'").unwrap();
        assert_eq!(
            c.listener(),
            Some(MetricsListen::Unix("/run/shelf/metrics.sock".into()))
        );
    }

    #[test]
    fn a_remote_address_needs_allow_remote() {
        for addr in ["0.0.0.0:9469", "[::]:9469", "192.0.2.1:9469"] {
            let e = parse(&format!("listen = '{addr}'")).unwrap_err();
            assert!(e.contains("allow_remote"), "{addr}: {e}");
            assert!(parse(&format!("listen = '{addr}'\nallow_remote = true")).is_ok());
        }
    }

    #[test]
    fn bad_values_are_refused() {
        for text in [
            "listen = 'localhost:9469'",
            "listen = '9469'",
            "listen = 'rel/sock'",
            "textfile = 'rel.prom'",
            "textfile = '/var/lib/node/shelf.txt'",
            "textfile = '/var/lib/node/../shelf.prom'",
            "textfile_interval = 0",
            "max_scrapes = 0",
            "max_scrapes = 65",
            "request_timeout = 0",
            "min_interval = 301",
            "min_interval = -1",
            "listn = '127.0.0.1:1'",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }
}
