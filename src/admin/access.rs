//! Who may talk to the admin server from a browser: the `Host` a request names, the `Origin`
//! and `Sec-Fetch-Site` a browser adds, and the body type of a POST. An IO-free decision over a
//! request's head; [`super::guard`] applies it.
//!
//! Why: the admin server listens on loopback without a token by default, and a web page the
//! operator opens can reach loopback. DNS rebinding makes the page's own name point at
//! 127.0.0.1, so the browser sends `Host: evil.example` and treats the answers as the page's:
//! only a `Host` we know ends that. A page can also send "simple" cross-origin requests (a
//! `text/plain` POST, an `<img>` GET) without a preflight: the `Origin`/`Sec-Fetch-Site` check
//! and the JSON-only POST end those.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::uri::Authority;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};

use super::error::ApiError;

/// The one route browser apps on other origins (`admin.cors_origins`) may call.
pub const CORS_ROUTE: &str = "/api/session";

/// A bad `admin.public_hosts` or `admin.cors_origins` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not a host name or address with an optional port.
    #[error("admin.public_hosts entry {0:?} is not a host name or address with an optional port (like \"admin.example.com\" or \"10.0.0.5:8080\")")]
    Host(String),
    /// Not an `http(s)://host[:port]` origin.
    #[error("admin.cors_origins entry {0:?} is not an origin like \"https://app.example.com\" (scheme, host, optional port; no path)")]
    Origin(String),
}

/// A `Host` the server answers to: a name or address, and a port or any port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRule {
    host: String,
    port: Option<u16>,
}

/// A browser origin: scheme, host, port (the scheme's default filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
}

impl Origin {
    fn parse(s: &str) -> Option<Self> {
        let uri = Uri::from_str(s).ok()?;
        let https = match uri.scheme_str()? {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        let authority = uri.authority()?;
        if authority.as_str().contains('@') || !matches!(uri.path(), "" | "/") {
            return None;
        }
        if uri.query().is_some() {
            return None;
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Some(Self { https, host, port })
    }
}

/// A parsed `Host` header: the lowercased host (IPv6 in brackets) and the port if given.
fn parse_host(value: &str) -> Option<(String, Option<u16>)> {
    let a = Authority::from_str(value).ok()?;
    if a.as_str().contains('@') || a.host().is_empty() {
        return None;
    }
    Some((a.host().to_ascii_lowercase(), a.port_u16()))
}

/// The host as an IP address, when it is one (IPv6 without its brackets).
fn host_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// `localhost`, 127.0.0.0/8 and `[::1]`: names a rebinding page cannot take.
fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host == "localhost."
        || host_ip(host).is_some_and(|ip| match ip {
            IpAddr::V4(v4) => v4.is_loopback(),
            // a bare `::1` cannot be a Host (it needs brackets), host_ip accepts only that form
            IpAddr::V6(v6) => v6.is_loopback() && host.starts_with('['),
        })
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; add `Access-Control-Allow-Origin` with this origin to the answer when set.
    Pass {
        /// A listed origin calling [`CORS_ROUTE`].
        allow_origin: Option<HeaderValue>,
    },
    /// A CORS preflight from a listed origin for [`CORS_ROUTE`]: answer it here.
    Preflight {
        /// The origin to allow.
        allow_origin: HeaderValue,
    },
    /// Refuse it with this error.
    Refuse(ApiError),
}

/// The `Host`/`Origin`/content-type policy: `admin.public_hosts` and `admin.cors_origins`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    public_hosts: Vec<HostRule>,
    cors_origins: Vec<Origin>,
}

impl AccessPolicy {
    /// The policy from the two config lists; a bad entry is an error naming its key.
    pub fn new(public_hosts: &[String], cors_origins: &[String]) -> Result<Self, PolicyError> {
        let public_hosts = public_hosts
            .iter()
            .map(|h| {
                parse_host(h.trim())
                    .map(|(host, port)| HostRule { host, port })
                    .ok_or_else(|| PolicyError::Host(h.clone()))
            })
            .collect::<Result<_, _>>()?;
        let cors_origins = cors_origins
            .iter()
            .map(|o| Origin::parse(o.trim()).ok_or_else(|| PolicyError::Origin(o.clone())))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            public_hosts,
            cors_origins,
        })
    }

    /// Decides on a request from its head. `local_ip` is the address the connection arrived
    /// on: a `Host` naming it as an IP literal is what probes and scrapers send, and a
    /// rebinding page cannot send it (its `Host` is its own name).
    pub fn decide(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        local_ip: Option<IpAddr>,
    ) -> Verdict {
        let host = match self.allowed_host(uri, headers, local_ip) {
            Ok(h) => h,
            Err(e) => return Verdict::Refuse(e),
        };
        let path = uri.path();
        let api = path == "/api" || path.starts_with("/api/");
        let safe = matches!(*method, Method::GET | Method::HEAD);
        let origin = headers.get(header::ORIGIN);

        if *method == Method::OPTIONS && origin.is_some() {
            // a preflight: only listed origins, only for the CORS route
            return match self.listed(origin, path) {
                Some(allow_origin)
                    if headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) =>
                {
                    Verdict::Preflight { allow_origin }
                }
                _ => Verdict::Refuse(foreign_origin()),
            };
        }
        // the dashboard's page and the probes stay reachable from links and monitors
        if !api && safe {
            return Verdict::Pass { allow_origin: None };
        }
        let listed = self.listed(origin, path);
        let fetch_site = headers
            .get("sec-fetch-site")
            .map(|v| v.as_bytes().to_ascii_lowercase());
        let foreign_site = matches!(fetch_site.as_deref(), Some(b"cross-site" | b"same-site"));
        match (origin, &listed) {
            (_, Some(_)) => {}
            (Some(o), None) => {
                if foreign_site || !same_origin(o, &host) {
                    return Verdict::Refuse(foreign_origin());
                }
            }
            // curl and scripts send no Origin; a browser's cross-site request without one
            // (an <img>, a form GET) still says where it comes from in Sec-Fetch-Site
            (None, None) => {
                if foreign_site {
                    return Verdict::Refuse(foreign_origin());
                }
            }
        }
        let has_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
        // the one body that is not JSON: the /talk page's recording of a browser call. A PUT
        // is never a "simple" request, so a foreign page cannot send it without a preflight,
        // and preflights are refused here for every route but the CORS one
        let recording_upload =
            *method == Method::PUT && is_recording_path(path) && is_audio_wav(headers);
        if has_body && !recording_upload && !is_json(headers) {
            return Verdict::Refuse(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "POST bodies must be sent with `Content-Type: application/json` (a recording upload with `audio/wav`)",
            ));
        }
        Verdict::Pass {
            allow_origin: listed,
        }
    }

    /// The request's host when it is one we answer to; 421 otherwise.
    fn allowed_host(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        local_ip: Option<IpAddr>,
    ) -> Result<(String, Option<u16>), ApiError> {
        let header = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_host);
        // an absolute-form request line names a host too: it must pass as well
        let target = uri
            .authority()
            .map(|a| (a.host().to_ascii_lowercase(), a.port_u16()));
        let host = match (header, target) {
            (Some(h), None) => h,
            (None, Some(t)) => t,
            (Some(h), Some(t)) if h == t => h,
            _ => return Err(bad_host()),
        };
        let (name, port) = (&host.0, host.1);
        // a dual-stack listener sees an IPv4 client's connection on an IPv4-mapped address
        let local_ip = local_ip.map(|ip| ip.to_canonical());
        let ok = is_loopback_name(name)
            || local_ip.is_some_and(|ip| host_ip(name) == Some(ip))
            || self
                .public_hosts
                .iter()
                .any(|r| r.host == *name && r.port.is_none_or(|p| Some(p) == port));
        if ok {
            Ok(host)
        } else {
            Err(bad_host())
        }
    }

    /// The origin as a header value when it is listed in `admin.cors_origins` and the path is
    /// the one route they may call.
    fn listed(&self, origin: Option<&HeaderValue>, path: &str) -> Option<HeaderValue> {
        let o = origin?;
        if path != CORS_ROUTE {
            return None;
        }
        let parsed = Origin::parse(o.to_str().ok()?)?;
        self.cors_origins.contains(&parsed).then(|| o.clone())
    }
}

/// The `Origin` names the host and port the request was sent to (the scheme is not known to
/// a plain-HTTP server behind a TLS proxy, so it is not compared).
fn same_origin(origin: &HeaderValue, host: &(String, Option<u16>)) -> bool {
    let Some(o) = origin.to_str().ok().and_then(Origin::parse) else {
        return false; // `null` and anything malformed
    };
    let default = if o.https { 443 } else { 80 };
    o.host == host.0 && o.port == host.1.unwrap_or(default)
}

/// `/api/calls/{id}/recording`, the id one non-empty path segment.
fn is_recording_path(path: &str) -> bool {
    path.strip_prefix("/api/calls/")
        .and_then(|rest| rest.strip_suffix("/recording"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// `Content-Type: audio/wav`, parameters allowed.
fn is_audio_wav(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|m| m.eq_ignore_ascii_case("audio/wav"))
}

fn media_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
}

/// `Content-Type: application/json`, parameters allowed.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn bad_host() -> ApiError {
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "host_not_allowed",
        "the Host header is not a loopback name, this server's address or one listed in admin.public_hosts",
    )
}

fn foreign_origin() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        "requests from other sites are refused; list a browser app in admin.cors_origins to let it call /api/session",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str, hs: &[(&str, &str)]) -> (Method, Uri, HeaderMap) {
        let mut headers = HeaderMap::new();
        for (k, v) in hs {
            headers.append(
                axum::http::HeaderName::from_str(k).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        (method, Uri::from_str(path).unwrap(), headers)
    }

    fn policy() -> AccessPolicy {
        AccessPolicy::new(
            &["admin.example.com".into(), "10.1.2.3:9000".into()],
            &["https://app.example.com".into()],
        )
        .unwrap()
    }

    fn verdict(p: &AccessPolicy, method: Method, path: &str, hs: &[(&str, &str)]) -> Verdict {
        let (m, u, h) = req(method, path, hs);
        p.decide(&m, &u, &h, Some("10.0.0.7".parse().unwrap()))
    }

    fn code(v: &Verdict) -> Option<&'static str> {
        match v {
            Verdict::Refuse(e) => Some(e.code),
            _ => None,
        }
    }

    #[test]
    fn hosts_are_loopback_listed_or_the_local_address() {
        let p = policy();
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:8080",
            "127.9.9.9",
            "[::1]:8080",
            "admin.example.com",
            "Admin.Example.com:443",
            "10.1.2.3:9000",
            "10.0.0.7:8080",
        ] {
            let v = verdict(&p, Method::GET, "/api/calls", &[("host", host)]);
            assert_eq!(code(&v), None, "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.1.2.3:9001",
            "10.1.2.3",
            "10.0.0.8",
            "user@localhost",
            "",
            "[::2]",
        ] {
            let v = verdict(&p, Method::GET, "/healthz", &[("host", host)]);
            assert_eq!(code(&v), Some("host_not_allowed"), "{host:?}");
        }
        // a dual-stack listener: the local address is IPv4-mapped
        let (m, u, h) = req(Method::GET, "/healthz", &[("host", "10.0.0.9:8080")]);
        let v = p.decide(&m, &u, &h, Some("::ffff:10.0.0.9".parse().unwrap()));
        assert_eq!(code(&v), None);
        // no Host at all
        assert_eq!(
            code(&verdict(&p, Method::GET, "/healthz", &[])),
            Some("host_not_allowed")
        );
        // an absolute-form target must agree with the Host header
        let v = verdict(
            &p,
            Method::GET,
            "http://evil.example/api/calls",
            &[("host", "localhost")],
        );
        assert_eq!(code(&v), Some("host_not_allowed"));
    }

    #[test]
    fn posts_need_json_and_the_same_origin() {
        let p = policy();
        let h = ("host", "localhost:8080");
        let json = ("content-type", "application/json; charset=utf-8");
        let post = |hs: &[(&str, &str)]| verdict(&p, Method::POST, "/api/calls/c/say", hs);
        // curl: no Origin
        assert_eq!(post(&[h, json]), Verdict::Pass { allow_origin: None });
        // the dashboard
        assert_eq!(
            post(&[
                h,
                json,
                ("origin", "http://localhost:8080"),
                ("sec-fetch-site", "same-origin")
            ]),
            Verdict::Pass { allow_origin: None }
        );
        // a page elsewhere
        for o in [
            "http://evil.example",
            "http://localhost:8081",
            "http://127.0.0.1:8080",
            "null",
            "https://app.example.com",
        ] {
            assert_eq!(
                code(&post(&[h, json, ("origin", o)])),
                Some("origin_not_allowed"),
                "{o}"
            );
        }
        assert_eq!(
            code(&post(&[
                h,
                ("content-type", "text/plain"),
                ("origin", "http://evil.example")
            ])),
            Some("origin_not_allowed")
        );
        assert_eq!(
            code(&post(&[h, json, ("sec-fetch-site", "cross-site")])),
            Some("origin_not_allowed")
        );
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            assert_eq!(
                code(&post(&[h, ("content-type", ct)])),
                Some("unsupported_media_type")
            );
        }
        assert_eq!(code(&post(&[h])), Some("unsupported_media_type"));
        // a method no route takes is left to the router's 405
        let v = verdict(&p, Method::DELETE, "/api/calls", &[h]);
        assert_eq!(v, Verdict::Pass { allow_origin: None });
    }

    #[test]
    fn only_the_recording_upload_takes_audio_and_only_as_a_same_origin_put() {
        let p = policy();
        let h = ("host", "localhost:8080");
        let wav = ("content-type", "audio/wav");
        let put = |path: &str, hs: &[(&str, &str)]| verdict(&p, Method::PUT, path, hs);
        let pass = Verdict::Pass { allow_origin: None };
        assert_eq!(put("/api/calls/web-1/recording", &[h, wav]), pass);
        assert_eq!(
            put(
                "/api/calls/web-1/recording",
                &[h, wav, ("origin", "http://localhost:8080")]
            ),
            pass
        );
        assert_eq!(
            code(&put(
                "/api/calls/web-1/recording",
                &[h, wav, ("origin", "http://evil.example")]
            )),
            Some("origin_not_allowed")
        );
        // audio anywhere else, another method or another audio type: still JSON only
        for (m, path, ct) in [
            (Method::POST, "/api/calls/web-1/recording", "audio/wav"),
            (Method::PUT, "/api/calls/web-1/say", "audio/wav"),
            (Method::POST, "/api/calls/web", "audio/wav"),
            (Method::PUT, "/api/calls//recording", "audio/wav"),
            (Method::PUT, "/api/calls/a/b/recording", "audio/wav"),
            (Method::PUT, "/api/calls/web-1/recording", "text/plain"),
            (Method::PUT, "/api/calls/web-1/recording", "audio/mpeg"),
        ] {
            let v = verdict(&p, m.clone(), path, &[h, ("content-type", ct)]);
            assert_eq!(code(&v), Some("unsupported_media_type"), "{m} {path} {ct}");
        }
    }

    #[test]
    fn cross_site_gets_on_the_api_are_refused_but_not_the_page() {
        let p = policy();
        let h = ("host", "127.0.0.1:8080");
        let site = ("sec-fetch-site", "cross-site");
        let v = verdict(&p, Method::GET, "/api/session", &[h, site]);
        assert_eq!(code(&v), Some("origin_not_allowed"));
        let v = verdict(
            &p,
            Method::GET,
            "/api/calls",
            &[h, ("origin", "http://evil.example")],
        );
        assert_eq!(code(&v), Some("origin_not_allowed"));
        let v = verdict(&p, Method::GET, "/", &[h, site]);
        assert_eq!(v, Verdict::Pass { allow_origin: None });
        let v = verdict(&p, Method::GET, "/metrics", &[h]);
        assert_eq!(v, Verdict::Pass { allow_origin: None });
    }

    #[test]
    fn listed_origins_may_call_the_session_route_only() {
        let p = policy();
        let h = ("host", "admin.example.com");
        let app = ("origin", "https://app.example.com");
        let v = verdict(
            &p,
            Method::OPTIONS,
            "/api/session",
            &[h, app, ("access-control-request-method", "GET")],
        );
        assert_eq!(
            v,
            Verdict::Preflight {
                allow_origin: HeaderValue::from_static("https://app.example.com")
            }
        );
        let v = verdict(
            &p,
            Method::GET,
            "/api/session",
            &[h, app, ("sec-fetch-site", "cross-site")],
        );
        assert_eq!(
            v,
            Verdict::Pass {
                allow_origin: Some(HeaderValue::from_static("https://app.example.com"))
            }
        );
        let v = verdict(
            &p,
            Method::OPTIONS,
            "/api/calls",
            &[h, app, ("access-control-request-method", "GET")],
        );
        assert_eq!(code(&v), Some("origin_not_allowed"));
        let v = verdict(
            &p,
            Method::OPTIONS,
            "/api/session",
            &[
                h,
                ("origin", "https://other.example.com"),
                ("access-control-request-method", "GET"),
            ],
        );
        assert_eq!(code(&v), Some("origin_not_allowed"));
        let v = verdict(&p, Method::GET, "/api/calls", &[h, app]);
        assert_eq!(code(&v), Some("origin_not_allowed"));
    }

    #[test]
    fn bad_entries_name_their_key() {
        let e = AccessPolicy::new(&["http://x/".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("admin.public_hosts"), "{e}");
        for o in ["app.example.com", "ftp://x", "https://x/path", "https://"] {
            let e = AccessPolicy::new(&[], &[o.into()]).unwrap_err();
            assert!(e.to_string().contains("admin.cors_origins"), "{o}: {e}");
        }
        // an origin's default port is the same as no port
        let p = AccessPolicy::new(&[], &["https://app.example.com:443".into()]).unwrap();
        assert!(p
            .listed(
                Some(&HeaderValue::from_static("https://app.example.com")),
                CORS_ROUTE
            )
            .is_some());
    }
}
