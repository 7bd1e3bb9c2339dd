//! Shared state handed to every handler.

use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::db::Db;
use crate::service::QrAuthorizationService;
use crate::session_manager::SessionManagerClient;
use crate::system::CpuMeter;

use super::auth::TokenVerifier;

/// Cheap to clone: everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub db: Db,
    pub qr: QrAuthorizationService,
    pub session_manager: SessionManagerClient,
    pub tokens: TokenVerifier,
    pub started: Instant,
    pub cpu: CpuMeter,
}

impl AppState {
    pub fn new(config: Config, db: Db) -> Self {
        let qr = QrAuthorizationService::new(crate::db::repository::QrSessionRepository::new(
            db.clone(),
        ));
        let session_manager = SessionManagerClient::new(
            config.session_manager_base_url.clone(),
            config.session_manager_timeout,
        );
        let tokens = TokenVerifier::new(&config.jwt_secret);
        let started = Instant::now();
        AppState(Arc::new(Inner {
            config,
            db,
            qr,
            session_manager,
            tokens,
            started,
            cpu: CpuMeter::new(started),
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
