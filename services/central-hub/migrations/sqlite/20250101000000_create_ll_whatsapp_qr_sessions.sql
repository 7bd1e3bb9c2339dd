-- One row per customer: may this customer open a WhatsApp QR session?
-- Timestamps are written by the application in UTC (sqlx stores them as TEXT).
CREATE TABLE IF NOT EXISTS ll_whatsapp_qr_sessions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    cliente_id  BIGINT   NOT NULL,
    enabled     BOOLEAN  NOT NULL DEFAULT 0,
    enabled_by  VARCHAR(255) NULL,
    revoked_by  VARCHAR(255) NULL,
    expires_at  DATETIME NULL,
    revoked_at  DATETIME NULL,
    created_at  DATETIME NOT NULL,
    updated_at  DATETIME NOT NULL
);

CREATE UNIQUE INDEX IF NOT EXISTS uq_qr_sessions_cliente_id ON ll_whatsapp_qr_sessions (cliente_id);
CREATE INDEX IF NOT EXISTS idx_qr_sessions_enabled ON ll_whatsapp_qr_sessions (enabled);
CREATE INDEX IF NOT EXISTS idx_qr_sessions_expires_at ON ll_whatsapp_qr_sessions (expires_at);
CREATE INDEX IF NOT EXISTS idx_qr_sessions_revoked_at ON ll_whatsapp_qr_sessions (revoked_at);
