//! Typed OpenAI Realtime (GA) events: every client and server event the relay and the simulator
//! exchange, as serde types.
//!
//! Each enum carries an `Unknown` variant holding the raw JSON: an event type this crate does not
//! know (or a known type whose fields do not parse) never breaks a call. Beta event names are
//! accepted as aliases when reading; writing always uses the GA names.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// An error while reading an event from the wire.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The text is not a JSON object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// The object has no string `type` field.
    #[error("event has no string `type`")]
    NoType,
}

/// Reads `Option<Option<T>>` so that an absent field is `None` and an explicit `null` is
/// `Some(None)` (`turn_detection: null` turns detection off, absent keeps it).
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn write_double_option<S, T>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    T: Serialize,
{
    match v {
        Some(inner) => inner.serialize(s),
        None => s.serialize_none(),
    }
}

/// The session object of `session.update`, `session.created`, `session.updated` and of
/// `client_secrets`. Fields this crate does not name are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// `realtime` or `transcription`; required on every `session.update`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Server-assigned id (`sess_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `realtime.session` on server answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The model, e.g. `gpt-realtime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Unix seconds when the session ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// System instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// `["audio"]` or `["text"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_modalities: Option<Vec<String>>,
    /// Input and output audio settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioConfig>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// `auto`, `none`, `required` or a named function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// An integer or `"inf"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<Value>,
    /// Everything else (tracing, truncation, prompt, include, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `session.audio`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AudioConfig {
    /// What the client sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<AudioInput>,
    /// What the model speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<AudioOutput>,
}

/// `session.audio.input`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AudioInput {
    /// Input audio format (WebSocket only; ignored on WebRTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
    /// Transcription of the caller's audio; `null` turns it off.
    #[serde(
        default,
        deserialize_with = "double_option",
        serialize_with = "write_double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub transcription: Option<Option<Transcription>>,
    /// Turn detection; `null` turns it off (the client commits by hand).
    #[serde(
        default,
        deserialize_with = "double_option",
        serialize_with = "write_double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub turn_detection: Option<Option<TurnDetection>>,
    /// Noise reduction settings, kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_reduction: Option<Value>,
}

/// `session.audio.output`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AudioOutput {
    /// Output audio format (WebSocket only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
    /// The voice, e.g. `marin`; fixed after the first audio output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// Speaking speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
}

/// `{"type":"audio/pcm","rate":24000}`, `{"type":"audio/pcmu"}` or `{"type":"audio/pcma"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioFormat {
    /// The MIME-like format name.
    #[serde(rename = "type")]
    pub kind: String,
    /// Sample rate; only 24000 for `audio/pcm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
}

impl AudioFormat {
    /// G.711 µ-law at 8 kHz.
    pub fn pcmu() -> Self {
        Self {
            kind: "audio/pcmu".into(),
            rate: None,
        }
    }
    /// G.711 A-law at 8 kHz.
    pub fn pcma() -> Self {
        Self {
            kind: "audio/pcma".into(),
            rate: None,
        }
    }
}

/// `session.audio.input.transcription`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcription {
    /// e.g. `gpt-4o-transcribe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// ISO-639-1 language of the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// A hint for the transcriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// `session.audio.input.turn_detection`: `server_vad` or `semantic_vad`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnDetection {
    /// `server_vad` or `semantic_vad`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Activation threshold, 0.0 to 1.0 (server_vad).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Audio kept before the detected start (server_vad).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_padding_ms: Option<u32>,
    /// Silence that ends a turn (server_vad).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_duration_ms: Option<u32>,
    /// Prompt the caller after this much silence following a response (server_vad).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// Start a response when a turn ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_response: Option<bool>,
    /// Cancel the running response when the caller starts speaking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupt_response: Option<bool>,
    /// `low`, `medium`, `high` or `auto` (semantic_vad).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eagerness: Option<String>,
}

/// A function tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// `function` (other kinds are kept in `extra`).
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// The function's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn function_kind() -> String {
    "function".into()
}

/// A conversation item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Item {
    /// A user, assistant or system message.
    #[serde(rename = "message")]
    Message {
        /// `item_…`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// `realtime.item`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        object: Option<String>,
        /// `completed`, `incomplete` or `in_progress`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// `user`, `assistant` or `system`.
        role: String,
        /// The parts.
        #[serde(default)]
        content: Vec<ContentPart>,
    },
    /// The model calls a tool.
    #[serde(rename = "function_call")]
    FunctionCall {
        /// `item_…`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// `realtime.item`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        object: Option<String>,
        /// `completed`, `incomplete` or `in_progress`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// `call_…`, echoed in the output.
        call_id: String,
        /// The tool's name.
        name: String,
        /// JSON text of the arguments.
        arguments: String,
    },
    /// The client's answer to a function call.
    #[serde(rename = "function_call_output")]
    FunctionCallOutput {
        /// `item_…`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// `realtime.item`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        object: Option<String>,
        /// `completed`, `incomplete` or `in_progress`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// The call this answers.
        call_id: String,
        /// The result, usually JSON text.
        output: String,
    },
    /// Any other item, kept as given.
    #[serde(untagged)]
    Unknown(Value),
}

impl Item {
    /// The item's id, if it has one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Item::Message { id, .. }
            | Item::FunctionCall { id, .. }
            | Item::FunctionCallOutput { id, .. } => id.as_deref(),
            Item::Unknown(v) => v.get("id").and_then(Value::as_str),
        }
    }
}

/// A part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ContentPart {
    /// Text the user typed (or DTMF digits the relay forwards).
    #[serde(rename = "input_text")]
    InputText {
        /// The text.
        text: String,
    },
    /// Audio the user spoke.
    #[serde(rename = "input_audio")]
    InputAudio {
        /// Base64 audio, when sent with the item.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audio: Option<String>,
        /// Transcript, once known.
        #[serde(default)]
        transcript: Option<String>,
    },
    /// Model text (`text` in beta and in content-part events).
    #[serde(rename = "output_text", alias = "text")]
    OutputText {
        /// The text.
        #[serde(default)]
        text: Option<String>,
    },
    /// Model audio (`audio` in beta and in content-part events).
    #[serde(rename = "output_audio", alias = "audio")]
    OutputAudio {
        /// Base64 audio, rarely included.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audio: Option<String>,
        /// What the model said.
        #[serde(default)]
        transcript: Option<String>,
    },
    /// Any other part, kept as given.
    #[serde(untagged)]
    Unknown(Value),
}

/// The `part` of `response.content_part.added` / `.done`, whose type is `audio` or `text`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponsePart {
    /// `audio` or `text`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Text, for text parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Transcript, for audio parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// Base64 audio, rarely included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<String>,
}

/// A response (`response.created`, `response.done`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// `resp_…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `realtime.response`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// `in_progress`, `completed`, `cancelled`, `failed` or `incomplete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why it ended that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_details: Option<StatusDetails>,
    /// The items it produced.
    #[serde(default)]
    pub output: Vec<Item>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    /// Other fields (conversation_id, output_modalities, audio, metadata, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `response.status_details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusDetails {
    /// `completed`, `cancelled`, `incomplete` or `failed`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `turn_detected`, `client_cancelled`, `max_output_tokens` or `content_filter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For failed responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// The body of an `error` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// e.g. `missing_required_parameter`, `session_expired`.
    #[serde(default)]
    pub code: Option<String>,
    /// Human-readable text.
    pub message: String,
    /// The offending parameter, e.g. `session.type`.
    #[serde(default)]
    pub param: Option<String>,
    /// The client event that caused it.
    #[serde(default)]
    pub event_id: Option<String>,
}

/// One entry of `rate_limits.updated`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// `requests` or `tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// What is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Seconds until it resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_seconds: Option<f64>,
}

/// Events the client sends.
// One event is built per message and matched at once; boxing the session would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[allow(missing_docs)] // fields are the protocol's, named as in the API reference
pub enum ClientEvent {
    /// Change the session; `session.type` is required.
    #[serde(rename = "session.update")]
    SessionUpdate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        session: Session,
    },
    /// WebSocket only: caller audio, base64 in the session's input format.
    #[serde(rename = "input_audio_buffer.append")]
    InputAudioBufferAppend {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        audio: String,
    },
    /// Commit the input buffer as a user item (without turn detection).
    #[serde(rename = "input_audio_buffer.commit")]
    InputAudioBufferCommit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// Drop the uncommitted input audio.
    #[serde(rename = "input_audio_buffer.clear")]
    InputAudioBufferClear {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// WebRTC only: stop the model's audio now.
    #[serde(rename = "output_audio_buffer.clear")]
    OutputAudioBufferClear {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// Add an item (a text message, a function call output).
    #[serde(rename = "conversation.item.create")]
    ConversationItemCreate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_item_id: Option<String>,
        item: Item,
    },
    /// Cut an assistant audio item at what was actually played.
    #[serde(rename = "conversation.item.truncate")]
    ConversationItemTruncate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        item_id: String,
        content_index: u32,
        audio_end_ms: u64,
    },
    /// Remove an item.
    #[serde(rename = "conversation.item.delete")]
    ConversationItemDelete {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        item_id: String,
    },
    /// Ask for an item's server representation.
    #[serde(rename = "conversation.item.retrieve")]
    ConversationItemRetrieve {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        item_id: String,
    },
    /// Start a response, with optional overrides.
    #[serde(rename = "response.create")]
    ResponseCreate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response: Option<Value>,
    },
    /// Cancel the running response.
    #[serde(rename = "response.cancel")]
    ResponseCancel {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response_id: Option<String>,
    },
    /// Anything else, kept as given.
    #[serde(untagged)]
    Unknown(Value),
}

/// Events the server sends.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[allow(missing_docs)] // fields are the protocol's, named as in the API reference
pub enum ServerEvent {
    /// Something went wrong; most errors are recoverable.
    #[serde(rename = "error")]
    Error { event_id: String, error: ErrorBody },
    /// The session exists (first event).
    #[serde(rename = "session.created")]
    SessionCreated { event_id: String, session: Session },
    /// The full effective session after an update.
    #[serde(rename = "session.updated")]
    SessionUpdated { event_id: String, session: Session },
    /// Turn detection heard the caller start.
    #[serde(rename = "input_audio_buffer.speech_started")]
    SpeechStarted {
        event_id: String,
        audio_start_ms: u64,
        item_id: String,
    },
    /// Turn detection heard the caller stop.
    #[serde(rename = "input_audio_buffer.speech_stopped")]
    SpeechStopped {
        event_id: String,
        audio_end_ms: u64,
        item_id: String,
    },
    /// The input buffer became a user item.
    #[serde(rename = "input_audio_buffer.committed")]
    InputAudioBufferCommitted {
        event_id: String,
        #[serde(default)]
        previous_item_id: Option<String>,
        item_id: String,
    },
    /// The input buffer was cleared.
    #[serde(rename = "input_audio_buffer.cleared")]
    InputAudioBufferCleared { event_id: String },
    /// The idle timeout fired.
    #[serde(rename = "input_audio_buffer.timeout_triggered")]
    InputAudioBufferTimeoutTriggered {
        event_id: String,
        audio_start_ms: u64,
        audio_end_ms: u64,
        item_id: String,
    },
    /// An item joined the conversation (beta: `conversation.item.created`).
    #[serde(
        rename = "conversation.item.added",
        alias = "conversation.item.created"
    )]
    ConversationItemAdded {
        event_id: String,
        #[serde(default)]
        previous_item_id: Option<String>,
        item: Item,
    },
    /// An item is complete.
    #[serde(rename = "conversation.item.done")]
    ConversationItemDone {
        event_id: String,
        #[serde(default)]
        previous_item_id: Option<String>,
        item: Item,
    },
    /// An assistant item was truncated.
    #[serde(rename = "conversation.item.truncated")]
    ConversationItemTruncated {
        event_id: String,
        item_id: String,
        content_index: u32,
        audio_end_ms: u64,
    },
    /// An item was deleted.
    #[serde(rename = "conversation.item.deleted")]
    ConversationItemDeleted { event_id: String, item_id: String },
    /// Part of the caller's transcript.
    #[serde(rename = "conversation.item.input_audio_transcription.delta")]
    InputTranscriptionDelta {
        event_id: String,
        item_id: String,
        #[serde(default)]
        content_index: u32,
        delta: String,
    },
    /// The caller's transcript.
    #[serde(rename = "conversation.item.input_audio_transcription.completed")]
    InputTranscriptionCompleted {
        event_id: String,
        item_id: String,
        #[serde(default)]
        content_index: u32,
        transcript: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Value>,
    },
    /// Transcription failed.
    #[serde(rename = "conversation.item.input_audio_transcription.failed")]
    InputTranscriptionFailed {
        event_id: String,
        item_id: String,
        #[serde(default)]
        content_index: u32,
        error: Value,
    },
    /// A response started.
    #[serde(rename = "response.created")]
    ResponseCreated {
        event_id: String,
        response: Response,
    },
    /// A response ended (completed, cancelled, failed or incomplete).
    #[serde(rename = "response.done")]
    ResponseDone {
        event_id: String,
        response: Response,
    },
    /// Rate limits after a response started.
    #[serde(rename = "rate_limits.updated")]
    RateLimitsUpdated {
        event_id: String,
        rate_limits: Vec<RateLimit>,
    },
    /// An output item started.
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        event_id: String,
        response_id: String,
        output_index: u32,
        item: Item,
    },
    /// An output item finished.
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        event_id: String,
        response_id: String,
        output_index: u32,
        item: Item,
    },
    /// A content part started.
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        event_id: String,
        response_id: String,
        item_id: String,
        output_index: u32,
        content_index: u32,
        part: ResponsePart,
    },
    /// A content part finished.
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        event_id: String,
        response_id: String,
        item_id: String,
        output_index: u32,
        content_index: u32,
        part: ResponsePart,
    },
    /// Part of what the model says (beta: `response.audio_transcript.delta`).
    #[serde(
        rename = "response.output_audio_transcript.delta",
        alias = "response.audio_transcript.delta"
    )]
    OutputAudioTranscriptDelta {
        event_id: String,
        response_id: String,
        item_id: String,
        output_index: u32,
        content_index: u32,
        delta: String,
    },
    /// What the model said (beta: `response.audio_transcript.done`).
    #[serde(
        rename = "response.output_audio_transcript.done",
        alias = "response.audio_transcript.done"
    )]
    OutputAudioTranscriptDone {
        event_id: String,
        response_id: String,
        item_id: String,
        output_index: u32,
        content_index: u32,
        transcript: String,
    },
    /// WebSocket only: model audio, base64 in the output format (beta: `response.audio.delta`).
    #[serde(rename = "response.output_audio.delta", alias = "response.audio.delta")]
    OutputAudioDelta {
        event_id: String,
        response_id: String,
        item_id: String,
        output_index: u32,
        content_index: u32,
        delta: String,
    },
    /// The model's audio for this part is complete (beta: `response.audio.done`).
    #[serde(rename = "response.output_audio.done", alias = "response.audio.done")]
    OutputAudioDone {
        event_id: String,
        response_id: String,
        item_id: String,
        output_index: u32,
        content_index: u32,
    },
    /// Part of the model's text (beta: `response.text.delta`).
    #[serde(rename = "response.output_text.delta", alias = "response.text.delta")]
    OutputTextDelta {
        event_id: String,
        response_id: String,
        item_id: String,
        output_index: u32,
        content_index: u32,
        delta: String,
    },
    /// The model's text (beta: `response.text.done`).
    #[serde(rename = "response.output_text.done", alias = "response.text.done")]
    OutputTextDone {
        event_id: String,
        response_id: String,
        item_id: String,
        output_index: u32,
        content_index: u32,
        text: String,
    },
    /// Part of a function call's arguments.
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        event_id: String,
        response_id: String,
        item_id: String,
        output_index: u32,
        call_id: String,
        delta: String,
    },
    /// A function call's complete arguments: run the tool.
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        event_id: String,
        response_id: String,
        item_id: String,
        output_index: u32,
        call_id: String,
        #[serde(default)]
        name: String,
        arguments: String,
    },
    /// WebRTC only: the model's audio started flowing.
    #[serde(rename = "output_audio_buffer.started")]
    OutputAudioBufferStarted {
        event_id: String,
        response_id: String,
    },
    /// WebRTC only: the model's audio has all been played out.
    #[serde(rename = "output_audio_buffer.stopped")]
    OutputAudioBufferStopped {
        event_id: String,
        response_id: String,
    },
    /// WebRTC only: the model's audio was cut (barge-in or `output_audio_buffer.clear`).
    #[serde(rename = "output_audio_buffer.cleared")]
    OutputAudioBufferCleared {
        event_id: String,
        response_id: String,
    },
    /// Anything else, kept as given.
    #[serde(untagged)]
    Unknown(Value),
}

/// The `type` strings of [`ClientEvent`]'s known variants (GA names).
pub const CLIENT_EVENT_TYPES: &[&str] = &[
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
];

impl ClientEvent {
    /// Reads one client event. A non-object or an object without `type` is an error; an
    /// unknown type, or a known type with fields that do not fit, is `Unknown`.
    pub fn parse(text: &str) -> Result<Self, EventError> {
        parse_tagged(text)
    }

    /// The event's `type`.
    pub fn kind(&self) -> &str {
        match self {
            ClientEvent::SessionUpdate { .. } => "session.update",
            ClientEvent::InputAudioBufferAppend { .. } => "input_audio_buffer.append",
            ClientEvent::InputAudioBufferCommit { .. } => "input_audio_buffer.commit",
            ClientEvent::InputAudioBufferClear { .. } => "input_audio_buffer.clear",
            ClientEvent::OutputAudioBufferClear { .. } => "output_audio_buffer.clear",
            ClientEvent::ConversationItemCreate { .. } => "conversation.item.create",
            ClientEvent::ConversationItemTruncate { .. } => "conversation.item.truncate",
            ClientEvent::ConversationItemDelete { .. } => "conversation.item.delete",
            ClientEvent::ConversationItemRetrieve { .. } => "conversation.item.retrieve",
            ClientEvent::ResponseCreate { .. } => "response.create",
            ClientEvent::ResponseCancel { .. } => "response.cancel",
            ClientEvent::Unknown(v) => v.get("type").and_then(Value::as_str).unwrap_or(""),
        }
    }

    /// The client's `event_id`, echoed in errors it causes.
    pub fn event_id(&self) -> Option<&str> {
        match self {
            ClientEvent::SessionUpdate { event_id, .. }
            | ClientEvent::InputAudioBufferAppend { event_id, .. }
            | ClientEvent::InputAudioBufferCommit { event_id }
            | ClientEvent::InputAudioBufferClear { event_id }
            | ClientEvent::OutputAudioBufferClear { event_id }
            | ClientEvent::ConversationItemCreate { event_id, .. }
            | ClientEvent::ConversationItemTruncate { event_id, .. }
            | ClientEvent::ConversationItemDelete { event_id, .. }
            | ClientEvent::ConversationItemRetrieve { event_id, .. }
            | ClientEvent::ResponseCreate { event_id, .. }
            | ClientEvent::ResponseCancel { event_id, .. } => event_id.as_deref(),
            ClientEvent::Unknown(v) => v.get("event_id").and_then(Value::as_str),
        }
    }

    /// True for an `Unknown` whose `type` names a known event: its fields did not parse.
    pub fn is_malformed(&self) -> bool {
        matches!(self, ClientEvent::Unknown(_)) && CLIENT_EVENT_TYPES.contains(&self.kind())
    }

    /// The JSON text of this event.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl ServerEvent {
    /// Reads one server event. A non-object or an object without `type` is an error; an
    /// unknown type, or a known type with fields that do not fit, is `Unknown`.
    pub fn parse(text: &str) -> Result<Self, EventError> {
        parse_tagged(text)
    }

    /// The event's `type` (GA name).
    pub fn kind(&self) -> &str {
        match self {
            ServerEvent::Error { .. } => "error",
            ServerEvent::SessionCreated { .. } => "session.created",
            ServerEvent::SessionUpdated { .. } => "session.updated",
            ServerEvent::SpeechStarted { .. } => "input_audio_buffer.speech_started",
            ServerEvent::SpeechStopped { .. } => "input_audio_buffer.speech_stopped",
            ServerEvent::InputAudioBufferCommitted { .. } => "input_audio_buffer.committed",
            ServerEvent::InputAudioBufferCleared { .. } => "input_audio_buffer.cleared",
            ServerEvent::InputAudioBufferTimeoutTriggered { .. } => {
                "input_audio_buffer.timeout_triggered"
            }
            ServerEvent::ConversationItemAdded { .. } => "conversation.item.added",
            ServerEvent::ConversationItemDone { .. } => "conversation.item.done",
            ServerEvent::ConversationItemTruncated { .. } => "conversation.item.truncated",
            ServerEvent::ConversationItemDeleted { .. } => "conversation.item.deleted",
            ServerEvent::InputTranscriptionDelta { .. } => {
                "conversation.item.input_audio_transcription.delta"
            }
            ServerEvent::InputTranscriptionCompleted { .. } => {
                "conversation.item.input_audio_transcription.completed"
            }
            ServerEvent::InputTranscriptionFailed { .. } => {
                "conversation.item.input_audio_transcription.failed"
            }
            ServerEvent::ResponseCreated { .. } => "response.created",
            ServerEvent::ResponseDone { .. } => "response.done",
            ServerEvent::RateLimitsUpdated { .. } => "rate_limits.updated",
            ServerEvent::OutputItemAdded { .. } => "response.output_item.added",
            ServerEvent::OutputItemDone { .. } => "response.output_item.done",
            ServerEvent::ContentPartAdded { .. } => "response.content_part.added",
            ServerEvent::ContentPartDone { .. } => "response.content_part.done",
            ServerEvent::OutputAudioTranscriptDelta { .. } => {
                "response.output_audio_transcript.delta"
            }
            ServerEvent::OutputAudioTranscriptDone { .. } => {
                "response.output_audio_transcript.done"
            }
            ServerEvent::OutputAudioDelta { .. } => "response.output_audio.delta",
            ServerEvent::OutputAudioDone { .. } => "response.output_audio.done",
            ServerEvent::OutputTextDelta { .. } => "response.output_text.delta",
            ServerEvent::OutputTextDone { .. } => "response.output_text.done",
            ServerEvent::FunctionCallArgumentsDelta { .. } => {
                "response.function_call_arguments.delta"
            }
            ServerEvent::FunctionCallArgumentsDone { .. } => {
                "response.function_call_arguments.done"
            }
            ServerEvent::OutputAudioBufferStarted { .. } => "output_audio_buffer.started",
            ServerEvent::OutputAudioBufferStopped { .. } => "output_audio_buffer.stopped",
            ServerEvent::OutputAudioBufferCleared { .. } => "output_audio_buffer.cleared",
            ServerEvent::Unknown(v) => v.get("type").and_then(Value::as_str).unwrap_or(""),
        }
    }

    /// The JSON text of this event.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn parse_tagged<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, EventError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(EventError::NotJson("not an object".into()));
    }
    if !value.get("type").is_some_and(Value::is_string) {
        return Err(EventError::NoType);
    }
    // The untagged `Unknown` variant catches everything else, so this only fails on a bug.
    serde_json::from_value(value).map_err(|e| EventError::NotJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_update_round_trips_and_keeps_null_turn_detection() {
        let text = r#"{"type":"session.update","session":{"type":"realtime","instructions":"hi","audio":{"input":{"turn_detection":null},"output":{"voice":"marin"}},"tracing":"auto"}}"#;
        let ev = ClientEvent::parse(text).unwrap();
        let ClientEvent::SessionUpdate { session, .. } = &ev else {
            panic!("not a session.update: {ev:?}")
        };
        assert_eq!(session.kind.as_deref(), Some("realtime"));
        let input = session.audio.as_ref().unwrap().input.as_ref().unwrap();
        assert_eq!(input.turn_detection, Some(None));
        assert_eq!(session.extra.get("tracing"), Some(&json!("auto")));
        let back: Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn unknown_and_malformed_events_keep_raw_json() {
        let ev = ServerEvent::parse(r#"{"type":"brand.new","x":1}"#).unwrap();
        assert_eq!(ev, ServerEvent::Unknown(json!({"type":"brand.new","x":1})));
        let ev =
            ClientEvent::parse(r#"{"type":"conversation.item.truncate","item_id":3}"#).unwrap();
        assert!(ev.is_malformed());
        assert!(ClientEvent::parse("[1]").is_err());
        assert!(ClientEvent::parse("{}").is_err());
        assert!(ClientEvent::parse("nope").is_err());
    }

    #[test]
    fn beta_names_are_aliases() {
        let ev = ServerEvent::parse(
            r#"{"type":"response.audio_transcript.delta","event_id":"e","response_id":"r","item_id":"i","output_index":0,"content_index":0,"delta":"he"}"#,
        )
        .unwrap();
        assert!(
            matches!(ev, ServerEvent::OutputAudioTranscriptDelta { ref delta, .. } if delta == "he")
        );
        assert_eq!(ev.kind(), "response.output_audio_transcript.delta");
        let ev = ServerEvent::parse(
            r#"{"type":"conversation.item.created","event_id":"e","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"1"}]}}"#,
        )
        .unwrap();
        assert!(matches!(ev, ServerEvent::ConversationItemAdded { .. }));
    }

    #[test]
    fn function_call_output_item_parses() {
        let ev = ClientEvent::parse(
            r#"{"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"call_1","output":"{}"}}"#,
        )
        .unwrap();
        assert!(matches!(
            ev,
            ClientEvent::ConversationItemCreate { item: Item::FunctionCallOutput { ref call_id, .. }, .. } if call_id == "call_1"
        ));
    }
}
