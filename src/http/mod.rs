//! The HTTP host: router, middleware stack, graceful shutdown.
//!
//! Middleware order (outermost first): sensitive request headers → unsafe `X-Request-Id`
//! dropped → request id → trace → propagate request id → panic catcher → early 413 and body
//! deadline → per-route API-key check → handler (which applies the body limit and the
//! whole-request timeout itself so every rejection is an envelope). The listener itself
//! ([`edge::serve_router`]) enforces the header, idle and connection limits.

pub mod admin;
pub mod api_key;
pub mod audit;
pub mod edge;
pub mod feed;
pub mod html;
pub mod oauth;
pub mod openapi;
pub mod routes;
pub mod vault;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, header};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::app::App;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The full router over the application.
pub fn router(app: Arc<App>) -> Router {
    let body_limit = app.config.server.body_limit_bytes;
    let protected = Router::new()
        .route("/metrics", get(routes::metrics))
        .route("/manifest.json", get(routes::manifest))
        .route("/openapi.json", get(routes::openapi))
        .route("/actions", get(routes::list_actions))
        .route("/assets/{asset}/actions/{action}", post(routes::run_action))
        .route("/assets/{asset}/consent", post(oauth::request_consent))
        .route("/assets/{asset}/alerts/feed", get(feed::feed))
        .route("/vault/{vault_id}", get(vault::file))
        .route("/vault/{vault_id}/info", get(vault::info))
        .route("/audit", get(audit::audit))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            api_key::require,
        ));
    let open = Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/start_oauth", get(oauth::start_oauth))
        .route("/result", get(oauth::result))
        .route("/admin", get(admin::console))
        .route("/admin/style.css", get(admin::style))
        .route("/admin/sign-in", post(admin::sign_in))
        .route("/admin/sign-out", post(admin::sign_out))
        .route("/admin/assets/{asset}/connect", post(admin::connect));
    Router::new()
        .merge(protected)
        .merge(open)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                    header::COOKIE,
                ]))
                .layer(axum::middleware::from_fn(edge::request_id_guard))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                        let id = req
                            .headers()
                            .get(&REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(routes::panic_response))
                .layer(axum::middleware::from_fn_with_state(
                    app.clone(),
                    edge::body_guard,
                )),
        )
        .with_state(app)
}

/// Serves on `listener` until `shutdown` resolves (then drains in-flight requests), with the
/// connection limits of `[server]` (see [`edge`]).
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut pollers = crate::ingest::start(&app);
    pollers.push(crate::callbacks::resume_all(&app));
    if let Some(link) = &app.redis {
        pollers.push(crate::redis_link::keep_announcing(
            link.clone(),
            crate::redis_link::HostPresence {
                id: app.instance_id.clone(),
                public_url: app.config.server.public_url.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: crate::auth::now_unix(),
            },
        ));
    }
    let limits = edge::ConnLimits::of(&app.config.server);
    let router = router(app);
    let served = edge::serve_router(listener, router, limits, shutdown).await;
    for p in pollers {
        p.abort();
    }
    served
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
