//! QR string → `data:image/png;base64,...`.

use base64::Engine as _;
use image::{ImageFormat, Luma};
use qrcode::QrCode;

/// Renders `data` as a QR code PNG data URL (about 264 px square with quiet zone).
pub fn png_data_url(data: &str) -> Result<String, String> {
    let code = QrCode::new(data.as_bytes()).map_err(|e| format!("failed to encode QR: {e}"))?;
    let img = code.render::<Luma<u8>>().min_dimensions(256, 256).build();
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, ImageFormat::Png)
        .map_err(|e| format!("failed to encode PNG: {e}"))?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png.into_inner())
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_png() {
        let url = super::png_data_url("2@abc,def,ghi==").unwrap();
        assert!(
            url.starts_with("data:image/png;base64,iVBORw0KGgo"),
            "{url}"
        );
    }
}
