//! Instant queries against Prometheus, and what their results mean for a threshold.

use std::time::Duration;

use prometheus_http_query::response::Data;

use crate::engine::MetricOutcome;

/// How to reach Prometheus.
#[derive(Clone, Debug)]
pub struct PrometheusSettings {
    /// The base URL, for example `http://prometheus.monitoring:9090`.
    pub url: String,
    /// A bearer token sent with every query, if Prometheus needs one.
    pub bearer_token: Option<String>,
    /// How long one query may take before it counts as an Error.
    pub timeout: Duration,
    /// At most this many queries run at once.
    pub max_concurrent: usize,
}

/// Why the Prometheus client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusSetupError {
    #[error("the Prometheus bearer token is not a valid HTTP header value")]
    Token(#[source] reqwest::header::InvalidHeaderValue),
    #[error("could not build the HTTP client for Prometheus: {0}")]
    Http(#[source] reqwest::Error),
    #[error("invalid Prometheus URL {url:?}: {source}")]
    Url {
        url: String,
        #[source]
        source: prometheus_http_query::Error,
    },
}

/// The raw result of one query, before any threshold is applied.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryResult {
    /// One number: a scalar, or a vector with exactly one sample.
    Value(f64),
    /// No data: an empty vector, or NaN.
    NoData(String),
    /// The query could not be answered, or its answer cannot be compared.
    Error(String),
}

/// A Prometheus client for instant queries.
pub struct Prometheus {
    client: prometheus_http_query::Client,
    timeout: Duration,
}

impl Prometheus {
    /// A client for these settings.
    pub fn new(settings: &PrometheusSettings) -> Result<Self, PrometheusSetupError> {
        // kube brings rustls with the ring provider; reqwest uses the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &settings.bearer_token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(PrometheusSetupError::Token)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(settings.timeout)
            .build()
            .map_err(PrometheusSetupError::Http)?;
        let client =
            prometheus_http_query::Client::from(http, &settings.url).map_err(|source| {
                PrometheusSetupError::Url {
                    url: settings.url.clone(),
                    source,
                }
            })?;
        Ok(Self {
            client,
            timeout: settings.timeout,
        })
    }

    /// Runs one instant query. Never fails: failures are an [`QueryResult::Error`].
    pub async fn query(&self, query: &str) -> QueryResult {
        let request = self
            .client
            .query(query)
            .timeout(self.timeout.as_millis() as i64)
            .get();
        match tokio::time::timeout(self.timeout, request).await {
            Err(_) => QueryResult::Error(format!(
                "Prometheus did not answer within {:?}",
                self.timeout
            )),
            Ok(Err(err)) => QueryResult::Error(format!("Prometheus query failed: {err}")),
            Ok(Ok(response)) => classify(response.data()),
        }
    }
}

/// What a query's data means: one value, no data, or an error.
pub fn classify(data: &Data) -> QueryResult {
    let value = match data {
        Data::Scalar(sample) => sample.value(),
        Data::Vector(samples) => match samples.as_slice() {
            [] => return QueryResult::NoData("the query returned no series".into()),
            [one] => one.sample().value(),
            many => {
                return QueryResult::Error(format!(
                    "the query returned {} series; it must return one (aggregate it, for example with sum())",
                    many.len()
                ));
            }
        },
        Data::Matrix(_) => {
            return QueryResult::Error(
                "the query returned a range vector; it must be an instant query".into(),
            );
        }
    };
    if value.is_nan() {
        QueryResult::NoData("the query returned NaN".into())
    } else {
        QueryResult::Value(value)
    }
}

/// Compares a result with the healthy range `min..=max`.
pub fn judge(
    result: &QueryResult,
    min: Option<f64>,
    max: Option<f64>,
) -> (MetricOutcome, Option<f64>, Option<String>) {
    match result {
        QueryResult::Value(v) => {
            let healthy = min.is_none_or(|min| *v >= min) && max.is_none_or(|max| *v <= max);
            let outcome = if healthy {
                MetricOutcome::Healthy
            } else {
                MetricOutcome::Breached
            };
            let message = (!healthy).then(|| describe_range(*v, min, max));
            (outcome, Some(*v), message)
        }
        QueryResult::NoData(why) => (MetricOutcome::NoData, None, Some(why.clone())),
        QueryResult::Error(why) => (MetricOutcome::Error, None, Some(why.clone())),
    }
}

fn describe_range(value: f64, min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!("{value} is outside {min}..{max}"),
        (Some(min), None) => format!("{value} is below the minimum {min}"),
        (None, Some(max)) => format!("{value} is above the maximum {max}"),
        (None, None) => format!("{value}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: &str) -> Data {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn one_sample_or_a_scalar_is_a_value() {
        let vector = data(
            r#"{"resultType":"vector","result":[{"metric":{"team":"a"},"value":[1700000000,"0.5"]}]}"#,
        );
        assert_eq!(classify(&vector), QueryResult::Value(0.5));
        let scalar = data(r#"{"resultType":"scalar","result":[1700000000,"3"]}"#);
        assert_eq!(classify(&scalar), QueryResult::Value(3.0));
    }

    #[test]
    fn empty_and_nan_are_no_data() {
        let empty = data(r#"{"resultType":"vector","result":[]}"#);
        assert!(matches!(classify(&empty), QueryResult::NoData(_)));
        let nan =
            data(r#"{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"NaN"]}]}"#);
        assert!(matches!(classify(&nan), QueryResult::NoData(m) if m.contains("NaN")));
    }

    #[test]
    fn several_samples_is_an_error_that_says_so() {
        let two = data(
            r#"{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}"#,
        );
        match classify(&two) {
            QueryResult::Error(message) => {
                assert!(message.contains("returned 2 series"), "{message}");
                assert!(message.contains("sum()"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let matrix = data(r#"{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}"#);
        assert!(matches!(classify(&matrix), QueryResult::Error(m) if m.contains("range vector")));
    }

    #[test]
    fn thresholds_are_inclusive() {
        let at = |v| judge(&QueryResult::Value(v), Some(1.0), Some(2.0)).0;
        assert_eq!(at(1.0), MetricOutcome::Healthy);
        assert_eq!(at(2.0), MetricOutcome::Healthy);
        assert_eq!(at(2.5), MetricOutcome::Breached);
        assert_eq!(at(0.5), MetricOutcome::Breached);
        let (outcome, value, message) = judge(&QueryResult::Value(7.0), None, Some(5.0));
        assert_eq!((outcome, value), (MetricOutcome::Breached, Some(7.0)));
        assert_eq!(message.unwrap(), "7 is above the maximum 5");
        assert_eq!(
            judge(&QueryResult::Error("x".into()), None, Some(1.0)).0,
            MetricOutcome::Error
        );
        assert_eq!(
            judge(&QueryResult::NoData("x".into()), None, Some(1.0)).0,
            MetricOutcome::NoData
        );
    }
}
