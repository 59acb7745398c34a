//! OpenTelemetry traces: `tracing` spans exported over OTLP (HTTP/protobuf), W3C trace
//! context in (from frontends) and out (to partners).
//!
//! The exporter runs on the SDK's batch thread; its HTTP requests go through the gateway's
//! own reqwest client on a one-thread runtime of their own, so exporting never competes
//! with a request thread and a slow collector only fills (then drops from) the batch queue.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{Bytes, HeaderExtractor, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::GatewayError;
use crate::config::TracesConfig;

/// The largest collector answer read (OTLP answers are a few bytes).
const MAX_COLLECTOR_ANSWER: usize = 64 * 1024;

/// The endpoint traces go to: the config's (`/v1/traces` added to a bare URL), else the
/// standard environment variables (read by the exporter itself); `None`: traces are off.
pub(super) fn endpoint(config: &TracesConfig) -> Option<Option<String>> {
    if let Some(endpoint) = &config.endpoint {
        let trimmed = endpoint.trim_end_matches('/');
        let has_path = url::Url::parse(endpoint).is_ok_and(|u| u.path().len() > 1);
        return Some(Some(if has_path {
            endpoint.clone()
        } else {
            format!("{trimmed}/v1/traces")
        }));
    }
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .then_some(None)
}

/// The exporter's HTTP client: reqwest on a runtime of its own.
#[derive(Debug, Clone)]
struct ExportClient {
    client: reqwest::Client,
    runtime: Arc<tokio::runtime::Runtime>,
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let mut builder = client.request(parts.method, parts.uri.to_string());
            for (name, value) in &parts.headers {
                builder = builder.header(name, value);
            }
            let mut reply = builder.body(body).send().await?;
            let status = reply.status();
            let mut answer = Vec::new();
            while let Some(chunk) = reply.chunk().await? {
                if answer.len() + chunk.len() > MAX_COLLECTOR_ANSWER {
                    break;
                }
                answer.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>((status, answer))
        });
        let (status, answer) = task.await??;
        Ok(Response::builder()
            .status(status)
            .body(Bytes::from(answer))?)
    }
}

/// The tracer provider exporting to `endpoint` (`None`: the environment's).
pub(super) fn provider(
    config: &TracesConfig,
    endpoint: Option<String>,
) -> Result<SdkTracerProvider, GatewayError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        GatewayError::Startup(format!("traces: {what}: {e}"))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("mallgate-otlp")
        .enable_all()
        .build()
        .map_err(|e| failed("cannot start the exporter's runtime", &e))?;
    // The platform's roots, as a partner without a `tls` block gets.
    let tls = mallgate_connectors::runtime::tls::default_config()
        .map_err(|e| failed("cannot load the platform's TLS roots", &e))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| failed("cannot build the exporter's HTTP client", &e))?;
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(Duration::from_secs(10))
        .with_http_client(ExportClient {
            client,
            runtime: Arc::new(runtime),
        });
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let exporter = builder
        .build()
        .map_err(|e| failed("cannot build the OTLP exporter", &e))?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| config.service_name.clone());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sampling_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// The `tracing` layer that turns spans into OTLP spans.
pub(super) fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("mallgate"))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
}

/// Makes `span` a child of the frontend's `traceparent`, when it sent a valid one.
pub fn adopt_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The trace id of `span` (32 hex digits) when it is part of a trace.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The W3C headers of `span`, for the partner request it wraps.
pub(super) fn propagation(span: &tracing::Span) -> Vec<(&'static str, String)> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return Vec::new();
    }
    let mut headers = vec![(
        "traceparent",
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        ),
    )];
    let state = sc.trace_state().header();
    if !state.is_empty() {
        headers.push(("tracestate", state));
    }
    headers
}
