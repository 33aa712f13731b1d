//! The admin HTTP port: Prometheus metrics at `/metrics` (the `metrics` crate's exporter).

use std::net::SocketAddr;
use std::str::FromStr;

use crate::error::CliError;

/// Where the admin HTTP server listens, or `off`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminListen {
    Off,
    At(SocketAddr),
}

impl FromStr for AdminListen {
    type Err = String;

    fn from_str(s: &str) -> Result<AdminListen, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(AdminListen::Off);
        }
        s.parse()
            .map(AdminListen::At)
            .map_err(|_| format!("{s:?} is neither HOST:PORT (e.g. 127.0.0.1:9095) nor \"off\""))
    }
}

/// Installs the Prometheus recorder and serves `/metrics` on `listen` (on the current tokio
/// runtime). Fails at once, with the address, when the port cannot be bound.
pub fn serve_metrics(listen: &AdminListen) -> Result<(), CliError> {
    let AdminListen::At(addr) = listen else {
        return Ok(());
    };
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(*addr)
        .install()
        .map_err(|e| {
            CliError::Runtime(format!(
                "cannot serve metrics on {addr}: {e}; pick another --admin-listen or \"off\""
            ))
        })?;
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_off_and_addresses() {
        assert_eq!("off".parse::<AdminListen>(), Ok(AdminListen::Off));
        assert_eq!(
            "127.0.0.1:9095".parse::<AdminListen>(),
            Ok(AdminListen::At("127.0.0.1:9095".parse().unwrap()))
        );
        assert!(
            "nope"
                .parse::<AdminListen>()
                .unwrap_err()
                .contains("HOST:PORT")
        );
    }
}
