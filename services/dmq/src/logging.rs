//! Logging: tracing to stderr (stdout is for data), filtered by `RUST_LOG` (default `info`), as
//! text or one JSON object per line; and, when an OTLP endpoint is configured
//! (`--otlp-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`), the same spans exported as
//! OpenTelemetry traces over OTLP/gRPC.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

/// Flushes exported spans when dropped (at the end of `main`).
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber. Must run inside the tokio runtime when `otlp_endpoint` is
/// set (the exporter's channel lives on it). An unparsable `RUST_LOG` directive is skipped
/// (with a note on stderr) rather than stopping the process; an OTLP endpoint that cannot be
/// used is reported on stderr and tracing goes on without it.
/// `quiet` (the client commands) makes the default level WARN, so a command's stderr holds
/// only what the user must see; `RUST_LOG` still overrides it.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>, service: &str, quiet: bool) -> Guard {
    let default = if quiet {
        LevelFilter::WARN
    } else {
        LevelFilter::INFO
    };
    let filter = EnvFilter::builder()
        .with_default_directive(default.into())
        .from_env_lossy();
    let (otel, provider) = match otlp_endpoint.map(|e| otlp_provider(e, service)) {
        Some(Ok(p)) => {
            let layer = tracing_opentelemetry::layer().with_tracer(p.tracer("dmq"));
            (Some(layer), Some(p))
        }
        Some(Err(e)) => {
            eprintln!("warning: OTLP trace export disabled: {e}");
            (None, None)
        }
        None => (None, None),
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    Guard(provider)
}

fn otlp_provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.to_string())
        .build()
        .map_err(|e| format!("{endpoint}: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_string())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
