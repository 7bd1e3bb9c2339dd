//! Repository and service against real databases: SQLite in a temp dir and a private MariaDB.

use central_hub::db::repository::QrSessionRepository;
use central_hub::db::Db;
use central_hub::service::{Authorization, QrAuthorizationService};
use chrono::{DateTime, Duration, DurationRound, Utc};

use crate::mariadb::MariaDb;

/// MySQL keeps microseconds; compare at that precision.
fn now() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(Duration::microseconds(1))
        .unwrap()
}

async fn exercise(db: Db) {
    let repo = QrSessionRepository::new(db.clone());
    let svc = QrAuthorizationService::new(repo.clone());

    // Nothing stored yet.
    assert_eq!(repo.find(7).await.unwrap(), None);
    assert_eq!(svc.check(7, now()).await.unwrap(), Authorization::NotFound);
    assert_eq!(repo.revoke(7, "ana", now()).await.unwrap(), None);

    // Insert.
    let t0 = now();
    let r = svc.enable(7, "ana", None, t0).await.unwrap();
    assert_eq!(
        (r.cliente_id, r.enabled, r.enabled_by.as_deref()),
        (7, true, Some("ana"))
    );
    assert_eq!(
        (r.expires_at, r.revoked_at, r.created_at, r.updated_at),
        (None, None, t0, t0)
    );
    assert_eq!(
        svc.check(7, now()).await.unwrap(),
        Authorization::Authorized
    );

    // Update in place (unique cliente_id): same id, new expiry, created_at kept.
    let exp = t0 + Duration::hours(1);
    let t1 = t0 + Duration::seconds(5);
    let r2 = svc.enable(7, "bob", Some(exp), t1).await.unwrap();
    assert_eq!(
        (r2.id, r2.enabled_by.as_deref(), r2.expires_at),
        (r.id, Some("bob"), Some(exp))
    );
    assert_eq!((r2.created_at, r2.updated_at), (t0, t1));
    assert_eq!(svc.check(7, t1).await.unwrap(), Authorization::Authorized);
    assert_eq!(
        svc.check(7, exp + Duration::seconds(1)).await.unwrap(),
        Authorization::Expired
    );

    // Revoke, then re-enable clears the revoke.
    let t2 = t1 + Duration::seconds(5);
    let rv = svc.revoke(7, "carla", t2).await.unwrap().unwrap();
    assert_eq!(
        (rv.enabled, rv.revoked_at, rv.revoked_by.as_deref()),
        (false, Some(t2), Some("carla"))
    );
    assert_eq!(svc.check(7, t2).await.unwrap(), Authorization::Revoked);
    let re = svc.enable(7, "ana", None, t2).await.unwrap();
    assert_eq!(
        (re.enabled, re.revoked_at, re.revoked_by),
        (true, None, None)
    );
    assert_eq!(svc.check(7, t2).await.unwrap(), Authorization::Authorized);

    // Already expired at enable time: stored, but not authorized.
    svc.enable(8, "ana", Some(t0 - Duration::seconds(1)), t0)
        .await
        .unwrap();
    assert_eq!(svc.check(8, now()).await.unwrap(), Authorization::Expired);

    // Past 2038, the end of MySQL's TIMESTAMP range: a revoke must still be stored
    // (MariaDB turned an out-of-range TIMESTAMP parameter into NULL = not revoked).
    let later: DateTime<Utc> = "2040-01-01T00:00:00Z".parse().unwrap();
    svc.enable(10, "ana", Some(later + Duration::days(1)), later)
        .await
        .unwrap();
    let rv = svc.revoke(10, "ana", later).await.unwrap().unwrap();
    assert_eq!(
        (rv.revoked_at, rv.updated_at, rv.expires_at),
        (Some(later), later, Some(later + Duration::days(1)))
    );
    assert_eq!(svc.check(10, later).await.unwrap(), Authorization::Revoked);

    // Customers are independent.
    assert_eq!(svc.get(9).await.unwrap(), None);
    assert!(db.ping().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_repository_and_service_follow_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/dir/hub.db", dir.path().display());
    exercise(Db::connect(&url).await.unwrap()).await;
    // Migrations are idempotent and data persists across pools.
    let again = Db::connect(&url).await.unwrap();
    let svc = QrAuthorizationService::new(QrSessionRepository::new(again));
    assert_eq!(
        svc.check(7, now()).await.unwrap(),
        Authorization::Authorized
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_repository_and_service_follow_the_rules() {
    let Some(maria) = MariaDb::start("mariadb_repository_and_service_follow_the_rules").await
    else {
        return;
    };
    exercise(Db::connect(&maria.url()).await.unwrap()).await;
    let again = Db::connect(&maria.url()).await.unwrap();
    assert_eq!(again.backend(), "mysql");
    let svc = QrAuthorizationService::new(QrSessionRepository::new(again));
    assert_eq!(
        svc.check(7, now()).await.unwrap(),
        Authorization::Authorized
    );
}
