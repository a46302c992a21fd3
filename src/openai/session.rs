//! Session logic shared by both transports, IO-free: the session config built from an agent,
//! `response.create` held back while a response runs, and the function-call round trip.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::events::{
    AudioConfig, AudioFormat, AudioInput, AudioOutput, ClientEvent, Item, ServerEvent, Session,
    Tool, Transcription, TurnDetection,
};

/// A tool the agent may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

/// What the realtime session needs to know about an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentSpec {
    /// The realtime model, e.g. `gpt-realtime`.
    pub model: String,
    /// The system prompt.
    pub instructions: String,
    /// The voice (cannot change after the first audio output).
    pub voice: Option<String>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Turn detection; `None` keeps the service's default (server VAD).
    pub turn_detection: Option<TurnDetection>,
    /// Transcription model for the caller's speech, e.g. `gpt-4o-transcribe`; `None` turns
    /// caller transcripts off.
    pub transcription_model: Option<String>,
    /// The caller's language (ISO 639-1), a hint for transcription.
    pub transcription_language: Option<String>,
}

impl Default for AgentSpec {
    fn default() -> Self {
        Self {
            model: "gpt-realtime".into(),
            instructions: String::new(),
            voice: None,
            tools: Vec::new(),
            turn_detection: None,
            transcription_model: None,
            transcription_language: None,
        }
    }
}

impl AgentSpec {
    /// The session object for `client_secrets` and `session.update`. `format` is the audio
    /// format both ways (WebSocket only: on WebRTC the media track decides and the field has
    /// no effect, so `None`).
    pub fn session(&self, format: Option<AudioFormat>) -> Session {
        let transcription = self.transcription_model.as_ref().map(|model| {
            Some(Transcription {
                model: Some(model.clone()),
                language: self.transcription_language.clone(),
                prompt: None,
            })
        });
        Session {
            kind: Some("realtime".into()),
            model: Some(self.model.clone()),
            instructions: Some(self.instructions.clone()),
            audio: Some(AudioConfig {
                input: Some(AudioInput {
                    format: format.clone(),
                    transcription,
                    turn_detection: self.turn_detection.clone().map(Some),
                    noise_reduction: None,
                }),
                output: Some(AudioOutput {
                    format,
                    voice: self.voice.clone(),
                    speed: None,
                }),
            }),
            tools: (!self.tools.is_empty()).then(|| {
                self.tools
                    .iter()
                    .map(|t| Tool {
                        kind: "function".into(),
                        name: Some(t.name.clone()),
                        description: Some(t.description.clone()),
                        parameters: Some(t.parameters.clone()),
                        extra: Default::default(),
                    })
                    .collect()
            }),
            tool_choice: (!self.tools.is_empty()).then(|| Value::String("auto".into())),
            ..Default::default()
        }
    }
}

/// A function call the model made: run the tool, then answer with
/// [`Turns::tool_output`] (or the leg's `submit_tool_output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// `call_…`.
    pub call_id: String,
    /// The tool's name.
    pub name: String,
    /// JSON text of the arguments (the model's; may be invalid JSON).
    pub arguments: String,
}

/// Prefix of the event ids this crate gives the `response.create` events it sends.
const RESPONSE_ID_PREFIX: &str = "vx_resp_";

/// The turn state of one session: whether a response runs, the `response.create` events
/// waiting for it to end, the function calls in flight, and whether the service cancels the
/// running response itself when the caller speaks.
#[derive(Debug, Default)]
pub struct Turns {
    active: bool,
    /// The effective session has turn detection off, or on with `interrupt_response: false`
    /// (false by default: the service's default is server VAD that interrupts).
    keeps_response_on_speech: bool,
    /// `speech_started` came while the running response was on.
    speech_during_response: bool,
    queued: VecDeque<ClientEvent>,
    /// The last `response.create` sent, in case the service says one was already running.
    last_sent: Option<(String, ClientEvent)>,
    /// Function call names by call id (from `output_item.added`; the done event may omit it).
    names: HashMap<String, String>,
    next_id: u64,
}

impl Turns {
    /// A session with no response running.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while a response runs (between sending or seeing it start and `response.done`).
    pub fn response_active(&self) -> bool {
        self.active
    }

    /// True when stopping the running response takes a `response.cancel` from the client:
    /// a response runs and the service is not already cancelling it, which it does itself on
    /// `speech_started` when turn detection has `interrupt_response` (then a second cancel
    /// races it and is answered `response_cancel_not_active`).
    pub fn cancel_needed(&self) -> bool {
        self.active && (self.keeps_response_on_speech || !self.speech_during_response)
    }

    /// `response.create` events waiting.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// Passes a client event through: `Some` to send now, `None` when it is a
    /// `response.create` held until the running response is done.
    pub fn outgoing(&mut self, ev: ClientEvent) -> Option<ClientEvent> {
        let ClientEvent::ResponseCreate { event_id, response } = ev else {
            return Some(ev);
        };
        let ev = ClientEvent::ResponseCreate {
            event_id: Some(event_id.unwrap_or_else(|| {
                self.next_id += 1;
                format!("{RESPONSE_ID_PREFIX}{}", self.next_id)
            })),
            response,
        };
        if self.active {
            self.queued.push_back(ev);
            return None;
        }
        Some(self.start(ev))
    }

    fn start(&mut self, ev: ClientEvent) -> ClientEvent {
        self.active = true;
        if let Some(id) = ev.event_id() {
            self.last_sent = Some((id.to_string(), ev.clone()));
        }
        ev
    }

    /// Reads a server event: returns a queued `response.create` to send now (after a
    /// `response.done`) and the function call to run (after its arguments are done).
    pub fn incoming(&mut self, ev: &ServerEvent) -> (Option<ClientEvent>, Option<ToolCall>) {
        match ev {
            ServerEvent::SessionCreated { session, .. }
            | ServerEvent::SessionUpdated { session, .. } => {
                let detection = session
                    .audio
                    .as_ref()
                    .and_then(|a| a.input.as_ref())
                    .and_then(|i| i.turn_detection.as_ref());
                match detection {
                    Some(None) => self.keeps_response_on_speech = true,
                    Some(Some(td)) => {
                        self.keeps_response_on_speech = td.interrupt_response == Some(false)
                    }
                    None => {}
                }
                (None, None)
            }
            ServerEvent::SpeechStarted { .. } => {
                self.speech_during_response = self.active;
                (None, None)
            }
            ServerEvent::ResponseCreated { .. } => {
                self.active = true;
                self.speech_during_response = false;
                (None, None)
            }
            ServerEvent::ResponseDone { .. } => {
                self.active = false;
                self.speech_during_response = false;
                let next = self.queued.pop_front().map(|ev| self.start(ev));
                (next, None)
            }
            ServerEvent::Error { error, .. }
                if error.code.as_deref() == Some("conversation_already_has_active_response") =>
            {
                // ours raced a response the service started itself: wait for that one's end
                let ours = match (&self.last_sent, &error.event_id) {
                    (Some((sent, ev)), Some(failed)) if sent == failed => Some(ev.clone()),
                    _ => None,
                };
                if let Some(ev) = ours {
                    self.last_sent = None;
                    self.active = true;
                    self.queued.push_front(ev);
                }
                (None, None)
            }
            ServerEvent::OutputItemAdded {
                item: Item::FunctionCall { call_id, name, .. },
                ..
            } => {
                self.names.insert(call_id.clone(), name.clone());
                (None, None)
            }
            ServerEvent::FunctionCallArgumentsDone {
                call_id,
                name,
                arguments,
                ..
            } => {
                let known = self.names.remove(call_id);
                let name = if name.is_empty() {
                    known.unwrap_or_default()
                } else {
                    name.clone()
                };
                (
                    None,
                    Some(ToolCall {
                        call_id: call_id.clone(),
                        name,
                        arguments: arguments.clone(),
                    }),
                )
            }
            _ => (None, None),
        }
    }

    /// The events that answer a function call: its output item, then a `response.create`
    /// (which [`Turns::outgoing`] holds until the call's own response is done).
    pub fn tool_output(call_id: &str, output: String) -> [ClientEvent; 2] {
        [
            ClientEvent::ConversationItemCreate {
                event_id: None,
                previous_item_id: None,
                item: Item::FunctionCallOutput {
                    id: None,
                    object: None,
                    status: None,
                    call_id: call_id.to_string(),
                    output,
                },
            },
            ClientEvent::ResponseCreate {
                event_id: None,
                response: None,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::events::{ErrorBody, Response};
    use serde_json::json;

    fn done() -> ServerEvent {
        ServerEvent::ResponseDone {
            event_id: "e".into(),
            response: serde_json::from_value(json!({"id": "r", "status": "completed"})).unwrap(),
        }
    }

    fn create() -> ClientEvent {
        ClientEvent::ResponseCreate {
            event_id: None,
            response: None,
        }
    }

    #[test]
    fn session_carries_the_agent() {
        let agent = AgentSpec {
            instructions: "Book things.".into(),
            voice: Some("marin".into()),
            tools: vec![ToolSpec {
                name: "find_bookings".into(),
                description: "Find".into(),
                parameters: json!({"type": "object"}),
            }],
            turn_detection: Some(TurnDetection {
                kind: "server_vad".into(),
                silence_duration_ms: Some(400),
                interrupt_response: Some(true),
                ..serde_json::from_value(json!({"type": "server_vad"})).unwrap()
            }),
            transcription_model: Some("gpt-4o-transcribe".into()),
            transcription_language: Some("en".into()),
            ..Default::default()
        };
        let v = serde_json::to_value(agent.session(Some(AudioFormat::pcmu()))).unwrap();
        assert_eq!(v["type"], "realtime");
        assert_eq!(v["instructions"], "Book things.");
        assert_eq!(v["audio"]["output"]["voice"], "marin");
        assert_eq!(v["audio"]["input"]["format"]["type"], "audio/pcmu");
        assert_eq!(v["audio"]["output"]["format"]["type"], "audio/pcmu");
        assert_eq!(
            v["audio"]["input"]["transcription"],
            json!({"model": "gpt-4o-transcribe", "language": "en"})
        );
        assert_eq!(
            v["audio"]["input"]["turn_detection"]["silence_duration_ms"],
            400
        );
        assert_eq!(v["tools"][0]["name"], "find_bookings");
        assert_eq!(v["tools"][0]["type"], "function");
        assert_eq!(v["tool_choice"], "auto");
        // WebRTC: no format at all
        let v = serde_json::to_value(AgentSpec::default().session(None)).unwrap();
        assert!(v["audio"]["input"].get("format").is_none(), "{v}");
        assert!(v.get("tools").is_none());
    }

    #[test]
    fn response_create_waits_for_the_running_response() {
        let mut t = Turns::new();
        assert!(t.outgoing(create()).is_some());
        assert!(t.response_active());
        assert!(t.outgoing(create()).is_none(), "held while one runs");
        assert_eq!(t.queued(), 1);
        let (next, _) = t.incoming(&done());
        assert!(matches!(next, Some(ClientEvent::ResponseCreate { .. })));
        assert!(t.response_active());
        let (next, _) = t.incoming(&done());
        assert!(next.is_none());
        assert!(!t.response_active());
        // other events pass untouched
        let clear = ClientEvent::InputAudioBufferClear { event_id: None };
        t.incoming(&ServerEvent::ResponseCreated {
            event_id: "e".into(),
            response: Response::default(),
        });
        assert_eq!(t.outgoing(clear.clone()), Some(clear));
    }

    #[test]
    fn an_already_active_error_requeues_our_create() {
        let mut t = Turns::new();
        let sent = t.outgoing(create()).unwrap();
        let id = sent.event_id().unwrap().to_string();
        t.incoming(&done());
        let err = ServerEvent::Error {
            event_id: "e".into(),
            error: ErrorBody {
                kind: "invalid_request_error".into(),
                code: Some("conversation_already_has_active_response".into()),
                message: "busy".into(),
                param: None,
                event_id: Some(id.clone()),
            },
        };
        t.incoming(&err);
        assert_eq!(t.queued(), 1);
        let (next, _) = t.incoming(&done());
        assert_eq!(next.unwrap().event_id(), Some(id.as_str()));
    }

    fn session_event(turn_detection: serde_json::Value) -> ServerEvent {
        ServerEvent::parse(
            &json!({"type": "session.updated", "event_id": "e", "session": {
                "type": "realtime", "audio": {"input": {"turn_detection": turn_detection}}}})
            .to_string(),
        )
        .unwrap()
    }

    fn speech() -> ServerEvent {
        ServerEvent::parse(
            r#"{"type":"input_audio_buffer.speech_started","event_id":"e","audio_start_ms":0,"item_id":"i"}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_cancel_is_needed_unless_the_service_is_cancelling_on_speech() {
        let started = ServerEvent::ResponseCreated {
            event_id: "e".into(),
            response: Response::default(),
        };
        // the service default: server VAD that interrupts
        let mut t = Turns::new();
        assert!(!t.cancel_needed(), "nothing runs");
        t.incoming(&started);
        assert!(t.cancel_needed(), "a manual interrupt cancels");
        t.incoming(&speech());
        assert!(!t.cancel_needed(), "the service cancels it on speech");
        t.incoming(&done());
        t.incoming(&started);
        assert!(t.cancel_needed(), "a new response starts afresh");
        // speech heard between responses does not carry over
        let mut t = Turns::new();
        t.incoming(&speech());
        t.incoming(&started);
        assert!(t.cancel_needed());

        for td in [
            json!({"type": "server_vad", "interrupt_response": false}),
            serde_json::Value::Null,
        ] {
            let mut t = Turns::new();
            t.incoming(&session_event(td.clone()));
            t.incoming(&started);
            t.incoming(&speech());
            assert!(t.cancel_needed(), "{td}: the service lets it run");
        }
        let mut t = Turns::new();
        t.incoming(&session_event(json!({"type": "semantic_vad"})));
        t.incoming(&started);
        t.incoming(&speech());
        assert!(!t.cancel_needed(), "interrupt_response defaults to true");
    }

    #[test]
    fn a_function_call_round_trip() {
        let mut t = Turns::new();
        let added: ServerEvent = ServerEvent::parse(
            r#"{"type":"response.output_item.added","event_id":"e","response_id":"r","output_index":0,"item":{"type":"function_call","call_id":"call_1","name":"find_bookings","arguments":""}}"#,
        )
        .unwrap();
        t.incoming(&added);
        let args: ServerEvent = ServerEvent::parse(
            r#"{"type":"response.function_call_arguments.done","event_id":"e","response_id":"r","item_id":"i","output_index":0,"call_id":"call_1","arguments":"{\"phone\":\"1\"}"}"#,
        )
        .unwrap();
        let (_, call) = t.incoming(&args);
        let call = call.unwrap();
        assert_eq!(call.name, "find_bookings");
        assert_eq!(call.arguments, r#"{"phone":"1"}"#);
        t.incoming(&ServerEvent::ResponseCreated {
            event_id: "e".into(),
            response: Response::default(),
        });
        let [item, create] = Turns::tool_output(&call.call_id, "{}".into());
        assert!(t.outgoing(item).is_some());
        assert!(
            t.outgoing(create).is_none(),
            "held until the call's response is done"
        );
        let (next, _) = t.incoming(&done());
        assert!(next.is_some());
    }
}
