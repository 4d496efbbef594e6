//! The live carbon providers against a server on 127.0.0.1 that answers in
//! each provider's documented JSON shape — and with errors, garbage and silence.

use ecomap::config::policy::HttpProvider;
use ecomap_actors::carbon_http::ProviderClient;
use std::sync::mpsc;
use std::time::Duration;

/// Serve `answers` (status, body, delay) in order on a fresh port; returns
/// the base URL and a receiver of each request's (url, auth-token header).
fn server(
    answers: Vec<(u16, &'static str, Duration)>,
) -> (String, mpsc::Receiver<(String, Option<String>)>) {
    let srv = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}", srv.server_addr().to_ip().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (status, body, delay) in answers {
            let Ok(req) = srv.recv_timeout(Duration::from_secs(10)) else {
                return;
            };
            let Some(req) = req else { return };
            let token = req
                .headers()
                .iter()
                .find(|h| h.field.equiv("auth-token"))
                .map(|h| h.value.to_string());
            let _ = tx.send((req.url().to_string(), token));
            std::thread::sleep(delay);
            let _ = req.respond(tiny_http::Response::from_string(body).with_status_code(status));
        }
    });
    (base, rx)
}

fn em(base: &str, timeout: Duration) -> ProviderClient {
    // The variable name is unique to this test binary, so tests cannot race on it.
    std::env::set_var("ECOMAP_TEST_EM_TOKEN", "secret-token");
    ProviderClient::new(
        HttpProvider::ElectricityMaps {
            zone: "DE".into(),
            token_env: "ECOMAP_TEST_EM_TOKEN".into(),
        },
        Some(base),
        timeout,
    )
    .unwrap()
}

const EM_OK: &str = r#"{"zone":"DE","carbonIntensity":302,"datetime":"2019-01-01T00:00:00.000Z","updatedAt":"2019-01-01T00:00:00.000Z","emissionFactorType":"lifecycle","isEstimated":false}"#;

#[test]
fn electricity_maps_answer_is_read_with_the_token() {
    let (base, rx) = server(vec![(200, EM_OK, Duration::ZERO)]);
    let c = em(&base, Duration::from_secs(2));
    assert_eq!(c.fetch_once().unwrap().gco2_per_kwh, 302.0);
    let (url, token) = rx.recv().unwrap();
    assert_eq!(url, "/v3/carbon-intensity/latest?zone=DE");
    assert_eq!(token.as_deref(), Some("secret-token"));
}

#[test]
fn uk_national_grid_uses_actual_then_forecast() {
    let (base, _rx) = server(vec![
        (
            200,
            r#"{"data":[{"from":"2018-01-20T12:00Z","to":"2018-01-20T12:30Z","intensity":{"forecast":266,"actual":263,"index":"moderate"}}]}"#,
            Duration::ZERO,
        ),
        (
            200,
            r#"{"data":[{"from":"2018-01-20T12:00Z","to":"2018-01-20T12:30Z","intensity":{"forecast":266,"actual":null,"index":"moderate"}}]}"#,
            Duration::ZERO,
        ),
    ]);
    let c = ProviderClient::new(
        HttpProvider::UkNationalGrid,
        Some(&base),
        Duration::from_secs(2),
    )
    .unwrap();
    let actual = c.fetch_once().unwrap();
    assert_eq!(actual.gco2_per_kwh, 263.0);
    // The half hour's end, in the API's minutes-only form.
    assert_eq!(
        actual.valid_until.unwrap().to_rfc3339(),
        "2018-01-20T12:30:00+00:00"
    );
    assert_eq!(c.fetch_once().unwrap().gco2_per_kwh, 266.0);
}

#[test]
fn errors_garbage_and_silence_are_explained_not_fatal() {
    let (base, _rx) = server(vec![
        (401, r#"{"error":"unauthorized"}"#, Duration::ZERO),
        (500, "internal error", Duration::ZERO),
        (200, "<html>not json</html>", Duration::ZERO),
        (200, r#"{"zone":"DE"}"#, Duration::ZERO),
        (200, EM_OK, Duration::from_millis(1500)),
    ]);
    let c = em(&base, Duration::from_millis(300));
    let e = c.fetch_once().unwrap_err().to_string();
    assert!(
        e.contains("HTTP 401") && e.contains("check the API token"),
        "{e}"
    );
    let e = c.fetch_once().unwrap_err().to_string();
    assert!(e.contains("HTTP 500"), "{e}");
    let e = c.fetch_once().unwrap_err().to_string();
    assert!(e.contains("invalid JSON"), "{e}");
    let e = c.fetch_once().unwrap_err().to_string();
    assert!(e.contains("no intensity"), "{e}");
    let t = std::time::Instant::now();
    let e = c.fetch_once().unwrap_err().to_string();
    assert!(
        t.elapsed() < Duration::from_millis(1400),
        "the timeout bounds a silent server"
    );
    assert!(
        e.to_lowercase().contains("timed out") || e.contains("timeout"),
        "{e}"
    );
}

#[test]
fn retries_back_off_and_succeed_when_the_provider_recovers() {
    let (base, rx) = server(vec![
        (500, "busy", Duration::ZERO),
        (503, "busy", Duration::ZERO),
        (200, EM_OK, Duration::ZERO),
    ]);
    let c = em(&base, Duration::from_secs(2));
    let t = std::time::Instant::now();
    assert_eq!(
        c.fetch_with_retries(3, Duration::from_millis(50))
            .unwrap()
            .gco2_per_kwh,
        302.0
    );
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "50 ms then 100 ms of back-off"
    );
    assert_eq!(rx.iter().take(3).count(), 3);
}

#[test]
fn a_missing_token_is_a_clear_start_up_error() {
    let e = ProviderClient::new(
        HttpProvider::ElectricityMaps {
            zone: "DE".into(),
            token_env: "ECOMAP_TEST_UNSET_TOKEN_VARIABLE".into(),
        },
        None,
        Duration::from_secs(1),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ECOMAP_TEST_UNSET_TOKEN_VARIABLE"), "{e}");
}

/// The figure's own time is read: Electricity Maps' hour lasts an hour
/// from its `datetime`, so at a wall time two hours after that hour began
/// the figure is an hour old; a time the format does not allow is an
/// error, not a fresh figure; an answer without a time is taken as current.
#[test]
fn a_figures_age_comes_from_the_answers_own_time() {
    let (base, _rx) = server(vec![
        (200, EM_OK, Duration::ZERO),
        (
            200,
            r#"{"zone":"DE","carbonIntensity":302,"datetime":"yesterday"}"#,
            Duration::ZERO,
        ),
        (
            200,
            r#"{"zone":"DE","carbonIntensity":302}"#,
            Duration::ZERO,
        ),
    ]);
    let c = em(&base, Duration::from_secs(2));
    let r = c.fetch_once().unwrap();
    let hour_began = chrono::DateTime::parse_from_rfc3339("2019-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(
        r.age_at(hour_began + chrono::TimeDelta::minutes(30)),
        Duration::ZERO,
        "within its hour"
    );
    assert_eq!(
        r.age_at(hour_began + chrono::TimeDelta::hours(2)),
        Duration::from_secs(3600)
    );
    let e = c.fetch_once().unwrap_err().to_string();
    assert!(e.contains("\"yesterday\"") && e.contains("RFC 3339"), "{e}");
    let r = c.fetch_once().unwrap();
    assert_eq!(r.valid_until, None);
    assert_eq!(r.age_at(chrono::Utc::now()), Duration::ZERO);
}
