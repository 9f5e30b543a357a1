//! One OpenAI-compatible chat-completions endpoint (vLLM, SGLang, `forge serve`, hosted APIs),
//! as the task tools use it: the labels' clarity rubric and the Foundry's issue rewriting.

use std::time::Duration;

use serde_json::{json, Value};

/// Where to ask, and as which model.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatEndpoint {
    /// Base URL (`http://host:8000`, a trailing `/v1` accepted) or the full
    /// `.../chat/completions` URL.
    pub url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer {api_key}`.
    pub api_key: Option<String>,
    pub timeout: Duration,
}

impl ChatEndpoint {
    pub fn new(url: &str, model: &str) -> Self {
        ChatEndpoint { url: url.to_string(), model: model.to_string(), api_key: None, timeout: Duration::from_secs(300) }
    }

    /// The chat-completions URL.
    pub fn chat_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        if base.ends_with("/chat/completions") {
            return base.to_string();
        }
        format!("{}/v1/chat/completions", base.trim_end_matches("/v1"))
    }

    /// An HTTP client carrying the API key.
    pub fn client(&self) -> Result<reqwest::Client, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = &self.api_key {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| "the API key is not a valid header value".to_string())?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        reqwest::Client::builder()
            .default_headers(headers)
            .timeout(self.timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }

    /// One completion at temperature 0: the assistant message's content. A failed request or a
    /// server error is tried once more; `Err` says what went wrong.
    pub async fn complete(&self, client: &reqwest::Client, system: &str, user: &str, max_tokens: u32) -> Result<String, String> {
        let body = json!({
            "model": self.model,
            "temperature": 0,
            "max_tokens": max_tokens,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
        });
        let url = self.chat_url();
        let mut last = String::new();
        for _ in 0..2 {
            let response = match client.post(&url).json(&body).send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("request failed: {e}");
                    continue;
                }
            };
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if !status.is_success() {
                last = format!("HTTP {status}: {}", text.chars().take(500).collect::<String>());
                if status.is_client_error() {
                    break;
                }
                continue;
            }
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| format!("not a chat-completions response ({e}): {}", text.chars().take(500).collect::<String>()))?;
            return Ok(v.pointer("/choices/0/message/content").and_then(Value::as_str).unwrap_or("").to_string());
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_a_base_with_or_without_v1() {
        for url in ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/", "http://h:8000/v1/chat/completions"] {
            assert_eq!(ChatEndpoint::new(url, "m").chat_url(), "http://h:8000/v1/chat/completions", "{url}");
        }
        assert_eq!(ChatEndpoint::new("https://x/api/chat/completions", "m").chat_url(), "https://x/api/chat/completions");
    }
}
