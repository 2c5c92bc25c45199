//! Requests through the gateway, and what answered them.

use std::{collections::BTreeMap, fmt, net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::TestEnvError;

/// The response header in which a backend names itself.
pub(crate) const BACKEND_HEADER: &str = "x-echo-backend";

/// A request to send through the gateway: a method, a path and headers (names are sent
/// as written, so a test can vary their case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// The same request with another header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        for (name, value) in &self.headers {
            write!(f, " {name}: {value}")?;
        }
        Ok(())
    }
}

/// One answer. A backend echoes its name, the method and the headers it saw (names in
/// lower case); an answer of the gateway itself has no backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub backend: Option<String>,
    pub method: String,
    pub headers: BTreeMap<String, String>,
}

impl Answer {
    /// The backend's name, or `HTTP <status>` for an answer of the gateway itself.
    pub fn who(&self) -> String {
        match &self.backend {
            Some(name) => name.clone(),
            None => format!("HTTP {}", self.status),
        }
    }
}

/// Answers by [`Answer::who`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<String, usize>);

impl Counts {
    pub fn add(&mut self, answer: &Answer) {
        *self.0.entry(answer.who()).or_default() += 1;
    }

    /// How many answers came from `who`.
    pub fn of(&self, who: &str) -> usize {
        self.0.get(who).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    /// Whether every answer came from `who` (and there was one).
    pub fn only(&self, who: &str) -> bool {
        self.total() > 0 && self.of(who) == self.total()
    }

    /// Whether the answers came from exactly these backends, each at least once.
    pub fn exactly(&self, who: &[&str]) -> bool {
        self.0.len() == who.len() && who.iter().all(|name| self.of(name) > 0)
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}

/// Sends `request` over a connection of its own, written by hand: HTTP clients normalise
/// header names to lower case, and a test of header-name case needs them as written.
pub(crate) async fn send(
    gateway: SocketAddr,
    hostname: &str,
    request: &Request,
    timeout: Duration,
) -> Result<Answer, TestEnvError> {
    let failed = |detail: String| TestEnvError::Network(format!("{request}: {detail}"));
    let exchange = async {
        let mut stream = TcpStream::connect(gateway).await?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {hostname}\r\nConnection: close\r\nContent-Length: 0\r\n",
            request.method, request.path
        );
        for (name, value) in &request.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| failed(format!("no answer within {timeout:?}")))?
        .map_err(|err| failed(err.to_string()))?;
    let (status, backend, body) = parse_response(&raw).map_err(failed)?;
    match serde_json::from_slice::<Answer>(&body) {
        Ok(answer) if status == 200 => Ok(answer),
        _ => Ok(Answer {
            status,
            backend,
            method: request.method.clone(),
            headers: BTreeMap::new(),
        }),
    }
}

/// The status, the backend that named itself, and the body of an HTTP/1.1 response
/// read to the end of its connection.
fn parse_response(raw: &[u8]) -> Result<(u16, Option<String>, Vec<u8>), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let backend = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case(BACKEND_HEADER)
            .then(|| value.trim().to_owned())
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, backend, body))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a truncated chunk")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|err| format!("a bad chunk size {size_text:?}: {err}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or("a truncated chunk")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).ok_or("a truncated chunk")?;
    }
}
