//! Unit tests of the builders: real handshakes over an in-memory duplex.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Runs one handshake plus a ping/pong over an in-memory duplex.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<(), String> {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server);
    let connector = TlsConnector::from(client);
    let name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let server_task = tokio::spawn(async move {
        let mut tls = acceptor.accept(s).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    });
    let client_res = async {
        let mut tls = connector
            .connect(name, c)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"pong");
        Ok::<_, String>(())
    }
    .await;
    let server_res = server_task.await.map_err(|e| e.to_string())?;
    client_res?;
    assert_eq!(&server_res?, b"ping");
    Ok(())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn self_signed_handshake_trusting_and_insecure() {
    let tls = load_server_config(None, None, "mx.example.test").unwrap();
    let ss = tls.generated.clone().expect("generated");
    let trusting = client_config_trusting(ss.cert_pem.as_bytes()).unwrap();
    rt().block_on(async {
        for name in ["mx.example.test", "localhost", "127.0.0.1", "::1"] {
            handshake(tls.config.clone(), trusting.clone(), name)
                .await
                .unwrap_or_else(|e| panic!("trusting handshake as {name}: {e}"));
        }
        handshake(
            tls.config.clone(),
            insecure_client_config(),
            "whatever.invalid",
        )
        .await
        .unwrap();
        // The trusting client must still check the name.
        let err = handshake(tls.config.clone(), trusting.clone(), "other.example")
            .await
            .unwrap_err();
        assert!(err.to_lowercase().contains("certificate"), "{err}");
        // And a different self-signed cert must not be trusted.
        let other = generate_self_signed("mx.example.test").unwrap();
        let other_client = client_config_trusting(other.cert_pem.as_bytes()).unwrap();
        assert!(handshake(tls.config.clone(), other_client, "localhost")
            .await
            .is_err());
    });
}

#[test]
fn from_pem_and_files() {
    let ss = generate_self_signed("localhost").unwrap();
    assert!(format!("{ss:?}").contains("<redacted>"));
    let from_pem = server_config_from_pem(ss.cert_pem.as_bytes(), ss.key_pem.as_bytes()).unwrap();
    let dir = std::env::temp_dir().join(format!("mailstorm-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let both = dir.join("both.pem");
    std::fs::write(&cert, &ss.cert_pem).unwrap();
    std::fs::write(&key, &ss.key_pem).unwrap();
    std::fs::write(&both, format!("{}{}", ss.cert_pem, ss.key_pem)).unwrap();
    let from_files = server_config(Some(&cert), Some(&key), "ignored").unwrap();
    let combined = server_config(Some(&both), None, "ignored").unwrap();
    let client = client_config_trusting(ss.cert_pem.as_bytes()).unwrap();
    rt().block_on(async {
        for cfg in [from_pem, from_files, combined] {
            handshake(cfg, client.clone(), "localhost").await.unwrap();
        }
    });

    // Missing file: the error names the path.
    let missing = dir.join("nope.pem");
    let err = server_config(Some(&missing), Some(&key), "h").unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }));
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    // No certificate in the "cert" file (it holds a key).
    let err = server_config(Some(&key), Some(&key), "h").unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    assert!(
        err.to_string().contains(&key.display().to_string()),
        "{err}"
    );

    // No key in the "key" file (it holds a certificate), and no key in a cert-only file.
    let err = server_config(Some(&cert), Some(&cert), "h").unwrap_err();
    assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    assert!(
        err.to_string().contains(&cert.display().to_string()),
        "{err}"
    );
    let err = server_config(Some(&cert), None, "h").unwrap_err();
    assert!(matches!(err, TlsError::NoKey { .. }), "{err}");

    // Key without certificate.
    let err = server_config(None, Some(&key), "h").unwrap_err();
    assert!(matches!(err, TlsError::KeyWithoutCert { .. }), "{err}");

    // Key of another certificate.
    let other = generate_self_signed("localhost").unwrap();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    let err = server_config(Some(&cert), Some(&other_key), "h").unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&cert.display().to_string()) && msg.contains(&other_key.display().to_string()),
        "{msg}"
    );

    // Broken PEM.
    let broken = dir.join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = server_config(Some(&broken), Some(&key), "h").unwrap_err();
    assert!(matches!(err, TlsError::BadPem { .. }), "{err}");
    assert!(
        err.to_string().contains(&broken.display().to_string()),
        "{err}"
    );

    // Garbage key bytes inside a well-formed PEM section.
    let bad_key = dir.join("bad-key.pem");
    std::fs::write(
        &bad_key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = server_config(Some(&cert), Some(&bad_key), "h").unwrap_err();
    assert!(
        matches!(err, TlsError::BadKey { .. } | TlsError::KeyMismatch { .. }),
        "{err}"
    );

    // In-memory errors still say what was wrong.
    let err = client_config_trusting(b"not pem").unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");

    std::fs::remove_dir_all(&dir).ok();
}
