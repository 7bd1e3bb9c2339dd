-- One row per customer: may this customer open a WhatsApp QR session?
-- Same logical schema as migrations/sqlite; timestamps are UTC (sqlx sets time_zone='+00:00').
CREATE TABLE IF NOT EXISTS ll_whatsapp_qr_sessions (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    cliente_id  BIGINT       NOT NULL,
    enabled     BOOLEAN      NOT NULL DEFAULT 0,
    enabled_by  VARCHAR(255) NULL,
    revoked_by  VARCHAR(255) NULL,
    expires_at  DATETIME(6)  NULL,
    revoked_at  DATETIME(6)  NULL,
    created_at  DATETIME(6)  NOT NULL,
    updated_at  DATETIME(6)  NOT NULL,
    UNIQUE KEY uq_qr_sessions_cliente_id (cliente_id),
    KEY idx_qr_sessions_enabled (enabled),
    KEY idx_qr_sessions_expires_at (expires_at),
    KEY idx_qr_sessions_revoked_at (revoked_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
