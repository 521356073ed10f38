package dev.limactl.serve;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import dev.limactl.data.Turn;
import dev.limactl.engine.Sampling;
import dev.limactl.generate.Answerer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executors;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * An OpenAI-compatible HTTP server over a {@link Answerer}: {@code GET /v1/models} and
 * {@code POST /v1/chat/completions} (plain JSON, or server-sent events with "stream": true), so
 * OpenAI SDKs and evaluation tools that take a base URL can use the model. Requests that arrive
 * together with the same sampling settings are decoded as one batch by a single worker (the model is
 * not thread-safe). Errors are OpenAI-style JSON with the usual status codes. Built on the JDK's
 * own HTTP server (jdk.httpserver), enough for loopback or a trusted network.
 */
public final class OpenAiServer implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();

    private record Pending(Answerer.Prepared prepared, Consumer<String> onText, CompletableFuture<Answerer.Answer> done) {
        Answerer.Request request() {
            return prepared.request();
        }
    }

    private final Answerer answerer;
    private final String modelName, apiKey;
    private final int maxBatch;
    private final HttpServer http;
    private final BlockingQueue<Pending> queue = new LinkedBlockingQueue<>();
    private final Thread worker;
    /** The batch the decoder is on, so close() can end its rows at the next step. */
    private volatile List<Pending> decoding = List.of();
    private final java.util.concurrent.ExecutorService handlers = Executors.newCachedThreadPool();
    private volatile boolean running = true;

    /** Largest request body accepted (413 above). */
    public static final int MAX_BODY_BYTES = 4 << 20;
    /** Seconds a client may take to send its request (the JDK server closes slower ones). */
    public static final int MAX_REQUEST_SECONDS = 30;

    static {
        // the JDK HTTP server's own limits (jdk.httpserver module properties), unless the user set them
        if (System.getProperty("sun.net.httpserver.maxReqTime") == null) {
            System.setProperty("sun.net.httpserver.maxReqTime", Integer.toString(MAX_REQUEST_SECONDS));
        }
        if (System.getProperty("sun.net.httpserver.maxReqHeaders") == null) System.setProperty("sun.net.httpserver.maxReqHeaders", "100");
    }

    private final java.util.function.Consumer<String> accessLog;

    /** apiKey null: no authentication. host: "127.0.0.1" by default in the CLI. */
    public OpenAiServer(Answerer answerer, String modelName, String host, int port, String apiKey, int maxBatch) throws IOException {
        this(answerer, modelName, host, port, apiKey, maxBatch, line -> { });
    }

    /**
     * accessLog receives one line per request: method, path, status, tokens, milliseconds (never the
     * API key or the content).
     */
    public OpenAiServer(Answerer answerer, String modelName, String host, int port, String apiKey, int maxBatch,
                        java.util.function.Consumer<String> accessLog) throws IOException {
        this.answerer = answerer;
        this.modelName = modelName;
        this.apiKey = apiKey;
        this.maxBatch = maxBatch;
        this.accessLog = accessLog;
        this.http = HttpServer.create(new InetSocketAddress(host, port), 64);
        http.createContext("/v1/models", logged(this::models));
        http.createContext("/health", logged(this::health));
        http.createContext("/v1/chat/completions", logged(this::completions));
        http.createContext("/v1/completions", logged(this::textCompletions));
        http.createContext("/", logged(ex -> error(ex, 404, "not_found", "no route " + ex.getRequestURI().getPath(), null)));
        http.setExecutor(handlers);
        worker = new Thread(this::work, "limactl-serve-decoder");
        worker.setDaemon(true);
    }

    public void start() {
        worker.start();
        http.start();
    }

    public int port() {
        return http.getAddress().getPort();
    }

    @Override
    public void close() {
        running = false;
        http.stop(0);
        handlers.shutdownNow();  // its threads would otherwise keep an embedding JVM alive for a minute
        worker.interrupt();
        decoding.forEach(p -> p.prepared().cancel());
        queue.forEach(p -> p.prepared().cancel());
        // the model outlives this server only if the decoder has stopped using it: wait out its step
        boolean interrupted = false;
        while (worker.isAlive()) {
            try {
                worker.join();
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) Thread.currentThread().interrupt();
    }

    // ------------------------------------------------------------------ decoding worker

    private void work() {
        while (running) {
            List<Pending> batch = new ArrayList<>();
            try {
                Pending first = queue.poll(200, TimeUnit.MILLISECONDS);
                if (first == null) continue;
                batch.add(first);
                Thread.sleep(5);  // let requests that arrive together join the batch
                List<Pending> rest = new ArrayList<>();
                queue.drainTo(rest);
                for (Pending p : rest) {
                    if (batch.size() < maxBatch && p.request().sampling().equals(first.request().sampling())) batch.add(p);
                    else queue.add(p);  // next round
                }
            } catch (InterruptedException e) {
                return;
            }
            decoding = batch;
            if (!running) batch.forEach(p -> p.prepared().cancel());  // close() came between
            try {
                List<Answerer.Prepared> reqs = batch.stream().map(Pending::prepared).toList();
                List<Answerer.Answer> answers = answerer.generatePrepared(reqs, (i, text) -> batch.get(i).onText().accept(text));
                for (int i = 0; i < batch.size(); i++) batch.get(i).done().complete(answers.get(i));
            } catch (RuntimeException e) {
                batch.forEach(p -> p.done().completeExceptionally(e));
            } finally {
                decoding = List.of();
            }
        }
    }

    // ------------------------------------------------------------------ HTTP

    /** Wraps a handler with the access log line of each request. */
    private com.sun.net.httpserver.HttpHandler logged(com.sun.net.httpserver.HttpHandler h) {
        return ex -> {
            long t0 = System.nanoTime();
            try {
                h.handle(ex);
            } finally {
                Object tokens = ex.getAttribute("limactl.tokens");
                accessLog.accept(String.format(java.util.Locale.ROOT, "%s %s %d tokens=%s %d ms", ex.getRequestMethod(),
                        ex.getRequestURI().getPath(), ex.getResponseCode(), tokens == null ? "-" : tokens, (System.nanoTime() - t0) / 1_000_000));
            }
        };
    }

    private boolean authorised(HttpExchange ex) throws IOException {
        if (apiKey == null) return true;
        String h = ex.getRequestHeaders().getFirst("Authorization");
        // constant time: how much of a guess is right must not show in the response time
        if (h != null && java.security.MessageDigest.isEqual(h.getBytes(StandardCharsets.UTF_8),
                ("Bearer " + apiKey).getBytes(StandardCharsets.UTF_8))) return true;
        error(ex, 401, "invalid_api_key", "missing or wrong API key (Authorization: Bearer ...)", null);
        return false;
    }

    /** GET /v1/models (the list) and GET /v1/models/{id} (the served model, or a 404 model_not_found). */
    private void models(HttpExchange ex) throws IOException {
        if (!authorised(ex)) return;
        if (!ex.getRequestMethod().equals("GET")) {
            error(ex, 405, "method_not_allowed", "use GET on /v1/models", null);
            return;
        }
        String path = ex.getRequestURI().getPath();
        ObjectNode model = JSON.createObjectNode().put("id", modelName).put("object", "model").put("created", 0).put("owned_by", "limactl");
        if (path.equals("/v1/models") || path.equals("/v1/models/")) {
            ObjectNode o = JSON.createObjectNode().put("object", "list");
            o.putArray("data").add(model);
            send(ex, 200, o);
            return;
        }
        String id = java.net.URLDecoder.decode(path.substring("/v1/models/".length()), StandardCharsets.UTF_8);
        if (!id.equals(modelName)) {
            error(ex, 404, "model_not_found", "The model \"" + id + "\" does not exist; this server serves \"" + modelName + "\"", "model");
            return;
        }
        send(ex, 200, model);
    }

    /** GET /health: 200 while the server runs (no key needed: load balancers and orchestrators probe it). */
    private void health(HttpExchange ex) throws IOException {
        if (!ex.getRequestMethod().equals("GET")) {
            error(ex, 405, "method_not_allowed", "use GET on /health", null);
            return;
        }
        send(ex, 200, JSON.createObjectNode().put("status", "ok").put("model", modelName));
    }

    /** The request's JSON object, after the key, method, size and model checks; null when an error was sent. */
    private JsonNode requestBody(HttpExchange ex, String path) throws IOException {
        if (!authorised(ex)) return null;
        if (!ex.getRequestMethod().equals("POST")) {
            error(ex, 405, "method_not_allowed", "use POST on " + path, null);
            return null;
        }
        JsonNode body;
        try {
            byte[] raw = ex.getRequestBody().readNBytes(MAX_BODY_BYTES + 1);
            if (raw.length > MAX_BODY_BYTES) {
                error(ex, 413, "invalid_request_error", "request body exceeds " + MAX_BODY_BYTES + " bytes", null);
                return null;
            }
            body = JSON.readTree(raw);
            if (body == null || !body.isObject()) throw new IOException("expected a JSON object");
        } catch (com.fasterxml.jackson.core.JacksonException e) {
            error(ex, 400, "invalid_request_error", "request body is not valid JSON: " + e.getOriginalMessage(), null);
            return null;
        } catch (IOException e) {
            error(ex, 400, "invalid_request_error", "request body is not valid JSON: " + e.getMessage(), null);
            return null;
        }
        JsonNode model = body.get("model");
        if (model != null && !model.isNull() && !(model.isTextual() && model.asText().equals(modelName))) {
            error(ex, 404, "model_not_found", "The model " + model + " does not exist; this server serves \"" + modelName + "\"", "model");
            return null;
        }
        return body;
    }

    private void completions(HttpExchange ex) throws IOException {
        JsonNode body = requestBody(ex, "/v1/chat/completions");
        if (body == null) return;
        int topLogprobs;
        boolean logprobs;
        try {
            logprobs = flag(body, "logprobs");
            topLogprobs = integer(body, "top_logprobs", 0, 0, 20);
            if (topLogprobs > 0 && !logprobs) throw new BadRequest("top_logprobs", "top_logprobs needs logprobs: true");
        } catch (BadRequest e) {
            error(ex, 400, "invalid_request_error", e.getMessage(), e.param);
            return;
        }
        // Every request is checked and tokenised here, on its own connection's thread: one that cannot
        // run fails alone, before it joins a batch, and the decoder never waits for a tokeniser.
        Answerer.Prepared req;
        try {
            req = answerer.prepare(parse(body));
        } catch (BadRequest e) {
            error(ex, 400, "invalid_request_error", e.getMessage(), e.param);
            return;
        } catch (IllegalArgumentException e) {
            error(ex, 400, "invalid_request_error", e.getMessage(), null);
            return;
        }
        String id = "chatcmpl-" + UUID.randomUUID().toString().replace("-", "");
        long created = System.currentTimeMillis() / 1000;
        JsonNode streamFlag = body.get("stream");
        if (streamFlag != null && !streamFlag.isNull() && !streamFlag.isBoolean()) {
            error(ex, 400, "invalid_request_error", "stream must be true or false", "stream");
            return;
        }
        JsonNode options = body.get("stream_options");
        boolean includeUsage = false;
        if (options != null && !options.isNull()) {
            JsonNode iu = options.get("include_usage");
            if (!options.isObject() || (iu != null && !iu.isNull() && !iu.isBoolean())) {
                error(ex, 400, "invalid_request_error", "stream_options must be an object whose include_usage is true or false", "stream_options");
                return;
            }
            includeUsage = iu != null && iu.asBoolean();
        }
        if (streamFlag != null && streamFlag.asBoolean()) {
            if (logprobs) {
                error(ex, 400, "invalid_request_error", "logprobs with stream is not supported", "logprobs");
                return;
            }
            boolean usage = includeUsage;
            stream(ex, req, chunk(id, created, JSON.createObjectNode().put("role", "assistant").put("content", ""), null),
                    text -> chunk(id, created, JSON.createObjectNode().put("content", text), null), a -> {
                        List<ObjectNode> last = new ArrayList<>(List.of(chunk(id, created, JSON.createObjectNode(), finishReason(a))));
                        if (usage) {  // OpenAI's last chunk: no choices, the usage of the whole answer
                            ObjectNode u = JSON.createObjectNode().put("id", id).put("object", "chat.completion.chunk").put("created", created)
                                    .put("model", modelName);
                            u.putArray("choices");
                            u.set("usage", usage(a));
                            last.add(u);
                        }
                        return last;
                    });
            return;
        }
        Answerer.Answer a = answer(ex, req);
        if (a == null) return;
        ObjectNode o = JSON.createObjectNode().put("id", id).put("object", "chat.completion").put("created", created).put("model", modelName);
        ObjectNode choice = o.putArray("choices").addObject().put("index", 0);
        choice.putObject("message").put("role", "assistant").put("content", a.text());
        if (logprobs) {  // OpenAI's chat form: one entry per generated token, with its top alternatives
            int[] prompt = req.prompt();
            Answerer.Scores sc = answerer.score(concat(prompt, a.tokens()), topLogprobs);
            ArrayNode content = choice.putObject("logprobs").putArray("content");
            for (int j = 0; j < a.tokens().length; j++) {
                int at = prompt.length + j;
                ObjectNode e = content.addObject();
                tokenEntry(e, a.tokens()[j], sc.logprob()[at]);
                ArrayNode tops = e.putArray("top_logprobs");
                for (int t = 0; t < sc.topIds()[at].length; t++) tokenEntry(tops.addObject(), sc.topIds()[at][t], sc.topLogprob()[at][t]);
            }
        } else {
            choice.putNull("logprobs");
        }
        choice.put("finish_reason", finishReason(a));
        o.set("usage", usage(a));
        send(ex, 200, o);
    }

    private static ObjectNode usage(Answerer.Answer a) {
        return JSON.createObjectNode().put("prompt_tokens", a.promptTokens()).put("completion_tokens", a.generatedTokens())
                .put("total_tokens", a.promptTokens() + a.generatedTokens());
    }

    /** A request decoded in its turn of the batch; null when it failed (the error already sent). */
    private Answerer.Answer answer(HttpExchange ex, Answerer.Prepared req) throws IOException {
        Pending p = new Pending(req, t -> { }, new CompletableFuture<>());
        queue.add(p);
        Answerer.Answer a;
        try {
            a = p.done().get();
        } catch (Exception e) {
            Throwable c = e.getCause() != null ? e.getCause() : e;
            error(ex, c instanceof IllegalArgumentException ? 400 : 500, c instanceof IllegalArgumentException ? "invalid_request_error" : "server_error",
                    String.valueOf(c.getMessage()), null);
            return null;
        }
        ex.setAttribute("limactl.tokens", a.promptTokens() + a.generatedTokens());
        return a;
    }

    /**
     * A streamed answer as server-sent events: {@code first} (if any), a chunk per new piece of text, the
     * closing chunks {@code last} makes from the answer, then [DONE]. A client that goes away has its row
     * cancelled at the next step; an error mid-stream is an OpenAI-style error event.
     */
    private void stream(HttpExchange ex, Answerer.Prepared req, ObjectNode first, java.util.function.Function<String, ObjectNode> piece,
                        java.util.function.Function<Answerer.Answer, List<ObjectNode>> last) throws IOException {
        ex.getResponseHeaders().set("Content-Type", "text/event-stream; charset=utf-8");
        ex.getResponseHeaders().set("Cache-Control", "no-cache");
        ex.sendResponseHeaders(200, 0);
        OutputStream os = ex.getResponseBody();
        Consumer<ObjectNode> event = delta -> {
            try {
                os.write(("data: " + JSON.writeValueAsString(delta) + "\n\n").getBytes(StandardCharsets.UTF_8));
                os.flush();
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        };
        try {
            if (first != null) event.accept(first);
        } catch (java.io.UncheckedIOException gone) {
            os.close();
            return;
        }
        Pending p = new Pending(req, text -> {
            try {
                event.accept(piece.apply(text));
            } catch (java.io.UncheckedIOException closedByClient) {
                req.cancel();  // the client went away: its row stops at the next step, the batch goes on
            }
        }, new CompletableFuture<>());
        queue.add(p);
        try {
            Answerer.Answer a = p.done().get();
            ex.setAttribute("limactl.tokens", (a.promptTokens() + a.generatedTokens()) + (a.finish().equals("cancelled") ? " cancelled" : ""));
            if (a.finish().equals("cancelled")) return;  // nobody is listening
            last.apply(a).forEach(event);
            os.write("data: [DONE]\n\n".getBytes(StandardCharsets.UTF_8));
        } catch (Exception e) {
            Throwable c = e instanceof java.util.concurrent.ExecutionException && e.getCause() != null ? e.getCause() : e;
            ObjectNode err = JSON.createObjectNode();
            err.putObject("error").put("message", c.getMessage() != null ? c.getMessage() : "the answer could not be generated")
                    .put("type", c instanceof IllegalArgumentException ? "invalid_request_error" : "server_error");
            try {
                os.write(("data: " + JSON.writeValueAsString(err) + "\n\n").getBytes(StandardCharsets.UTF_8));
            } catch (IOException gone) {
                // the client is gone too
            }
        } finally {
            os.close();
        }
    }

    private void tokenEntry(ObjectNode e, int id, float logprob) {
        String text = answerer.tokenText(id);
        e.put("token", text).put("logprob", logprob);
        ArrayNode bytes = e.putArray("bytes");
        for (byte b : text.getBytes(StandardCharsets.UTF_8)) bytes.add(b & 0xff);
    }

    private static int[] concat(int[] a, int[] b) {
        int[] out = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }

    /** An optional integer field in [lo, hi] (dflt when absent or null); anything else is a 400 naming it. */
    private static int integer(JsonNode b, String key, int dflt, int lo, int hi) {
        JsonNode n = b.get(key);
        if (n == null || n.isNull()) return dflt;
        if (!n.isIntegralNumber() || !n.canConvertToInt() || n.asInt() < lo || n.asInt() > hi) {
            throw new BadRequest(key, key + " must be an integer in [" + lo + ", " + hi + "], got " + n);
        }
        return n.asInt();
    }

    private static boolean flag(JsonNode b, String key) {
        JsonNode n = b.get(key);
        if (n == null || n.isNull()) return false;
        if (!n.isBoolean()) throw new BadRequest(key, key + " must be true or false");
        return n.asBoolean();
    }

    /**
     * POST /v1/completions: a raw prompt (a string, read with BOS first as Hugging Face tokenizers do, or
     * token ids) continued without the chat format; {@code echo} returns the prompt too and, with
     * {@code max_tokens: 0}, only scores it; {@code logprobs: k} gives each returned token's
     * log-probability and the k most likely tokens there (what lm-evaluation-harness's loglikelihood
     * requests read). Not streamed with logprobs.
     */
    private void textCompletions(HttpExchange ex) throws IOException {
        JsonNode body = requestBody(ex, "/v1/completions");
        if (body == null) return;
        int[] prompt;
        String promptText;
        Options o;
        boolean echo, stream;
        int k;
        try {
            JsonNode p = body.get("prompt");
            if (p != null && p.isArray() && p.size() == 1 && (p.get(0).isTextual() || p.get(0).isArray())) p = p.get(0);  // [prompt]
            if (p == null || p.isNull()) throw new BadRequest("prompt", "prompt is required");
            if (p.isTextual()) {
                promptText = p.asText();
                prompt = answerer.encodeRaw(promptText);
            } else if (p.isArray() && p.size() > 0) {
                prompt = new int[p.size()];
                for (int i = 0; i < p.size(); i++) {
                    JsonNode t = p.get(i);
                    if (!t.isIntegralNumber() || !t.canConvertToInt() || t.asInt() < 0 || t.asInt() >= answerer.vocabSize()) {
                        throw new BadRequest("prompt", "prompt[" + i + "] must be a token id in [0, " + answerer.vocabSize() + "), got " + t);
                    }
                    prompt[i] = t.asInt();
                }
                promptText = answerer.decode(prompt);
            } else {
                throw new BadRequest("prompt", "prompt must be a string, or an array of token ids (a batch of prompts is not supported)");
            }
            for (String unsupported : List.of("suffix", "best_of")) {
                if (body.has(unsupported) && !body.get(unsupported).isNull()) throw new BadRequest(unsupported, unsupported + " is not supported");
            }
            echo = flag(body, "echo");
            stream = flag(body, "stream");
            k = integer(body, "logprobs", -1, 0, 20);  // -1: none; k: the top tokens per position
            o = options(body, 16, echo ? 0 : 1);
            if (stream && (k >= 0 || o.maxTokens() == 0)) throw new BadRequest("stream", "stream with logprobs or max_tokens 0 is not supported");
            int room = answerer.contextLength() - prompt.length;
            if (room < (o.maxTokens() == 0 ? 0 : 1)) {
                throw new BadRequest("prompt", "the prompt has " + prompt.length + " tokens; the context holds " + answerer.contextLength());
            }
        } catch (BadRequest e) {
            error(ex, 400, "invalid_request_error", e.getMessage(), e.param);
            return;
        }
        String id = "cmpl-" + UUID.randomUUID().toString().replace("-", "");
        long created = System.currentTimeMillis() / 1000;
        Answerer.Answer a = new Answerer.Answer("", prompt.length, 0, "length");
        if (o.maxTokens() > 0) {
            Answerer.Prepared req = Answerer.Prepared.continuing(new Answerer.Request(List.of(new Turn(Turn.USER, promptText)), o.sampling(),
                    (int) Math.min(o.maxTokens(), answerer.contextLength() - prompt.length), o.stop(), o.seed()), prompt);
            if (stream) {
                stream(ex, req, null, text -> textChunk(id, created, text, null), a2 -> List.of(textChunk(id, created, "", finishReason(a2))));
                return;
            }
            a = answer(ex, req);
            if (a == null) return;
        }
        ex.setAttribute("limactl.tokens", prompt.length + a.generatedTokens());
        ObjectNode out = JSON.createObjectNode().put("id", id).put("object", "text_completion").put("created", created).put("model", modelName);
        ObjectNode choice = out.putArray("choices").addObject().put("index", 0);
        choice.put("text", echo ? promptText + a.text() : a.text());
        if (k >= 0) {
            int[] all = concat(prompt, a.tokens());
            Answerer.Scores sc;
            try {
                sc = answerer.score(all, k);
            } catch (IllegalArgumentException e) {
                error(ex, 400, "invalid_request_error", e.getMessage(), "prompt");
                return;
            }
            ObjectNode lp = choice.putObject("logprobs");
            ArrayNode tokens = lp.putArray("tokens"), logps = lp.putArray("token_logprobs"), tops = lp.putArray("top_logprobs"),
                    offsets = lp.putArray("text_offset");
            int offset = echo ? 0 : promptText.length();
            for (int j = echo ? 0 : prompt.length; j < all.length; j++) {
                String t = answerer.tokenText(all[j]);
                tokens.add(t);
                offsets.add(offset);
                offset += t.length();
                if (j == 0) {  // nothing precedes the first token
                    logps.addNull();
                    tops.addNull();
                    continue;
                }
                logps.add(sc.logprob()[j]);
                ObjectNode top = tops.addObject();
                for (int t2 = 0; t2 < sc.topIds()[j].length; t2++) top.put(answerer.tokenText(sc.topIds()[j][t2]), sc.topLogprob()[j][t2]);
            }
        } else {
            choice.putNull("logprobs");
        }
        choice.put("finish_reason", o.maxTokens() == 0 ? "length" : finishReason(a));
        out.set("usage", usage(a));
        send(ex, 200, out);
    }

    private ObjectNode textChunk(String id, long created, String text, String finish) {
        ObjectNode c = JSON.createObjectNode().put("id", id).put("object", "text_completion").put("created", created).put("model", modelName);
        ObjectNode ch = c.putArray("choices").addObject().put("index", 0).put("text", text);
        ch.putNull("logprobs");
        if (finish == null) ch.putNull("finish_reason");
        else ch.put("finish_reason", finish);
        return c;
    }

    private ObjectNode chunk(String id, long created, ObjectNode delta, String finish) {
        ObjectNode o = JSON.createObjectNode().put("id", id).put("object", "chat.completion.chunk").put("created", created)
                .put("model", modelName);
        ObjectNode c = o.putArray("choices").addObject().put("index", 0);
        c.set("delta", delta);
        if (finish == null) c.putNull("finish_reason");
        else c.put("finish_reason", finish);
        return o;
    }

    private static String finishReason(Answerer.Answer a) {
        return a.finish().equals("length") ? "length" : "stop";
    }

    private static final class BadRequest extends RuntimeException {
        final String param;

        BadRequest(String param, String message) {
            super(message);
            this.param = param;
        }
    }

    /** OpenAI request -> Answerer request. System messages are prepended to the next user turn (LIMA has no system role). */
    private Answerer.Request parse(JsonNode b) {
        // What the model cannot honour is refused rather than ignored: a client asking for a tool call
        // or a JSON reply would otherwise take plain text for one. Tools offered with tool_choice auto
        // (or none) are answered in text, as a model without tool use does.
        JsonNode toolChoice = b.get("tool_choice");
        if (toolChoice != null && !toolChoice.isNull()
                && !(toolChoice.isTextual() && (toolChoice.asText().equals("auto") || toolChoice.asText().equals("none")))) {
            throw new BadRequest("tool_choice", "this model answers in text and makes no tool calls: tool_choice must be \"auto\" or"
                    + " \"none\", got " + toolChoice);
        }
        JsonNode format = b.get("response_format");
        if (format != null && !format.isNull() && !format.path("type").asText("").equals("text")) {
            throw new BadRequest("response_format", "this server cannot constrain replies to JSON: response_format must be"
                    + " {\"type\": \"text\"}, got " + format);
        }
        JsonNode msgs = b.get("messages");
        if (msgs == null || !msgs.isArray() || msgs.isEmpty()) throw new BadRequest("messages", "\"messages\" must be a non-empty array");
        List<Turn> turns = new ArrayList<>();
        String system = "";
        for (int i = 0; i < msgs.size(); i++) {
            JsonNode m = msgs.get(i);
            String role = m.path("role").asText(""), content = contentOf(m.get("content"), i);
            switch (role) {
                case "system", "developer" -> system += content + "\n\n";
                case "user" -> {
                    turns.add(new Turn(Turn.USER, system + content));
                    system = "";
                }
                case "assistant" -> turns.add(new Turn(Turn.ASSISTANT, content));
                default -> throw new BadRequest("messages[" + i + "].role", "unsupported role \"" + role + "\" (system, user, assistant)");
            }
        }
        for (int i = 0; i < turns.size(); i++) {
            if (!turns.get(i).role().equals(i % 2 == 0 ? Turn.USER : Turn.ASSISTANT)) {
                throw new BadRequest("messages", "messages must alternate user and assistant, starting with user");
            }
        }
        if (turns.isEmpty() || !turns.get(turns.size() - 1).role().equals(Turn.USER)) {
            throw new BadRequest("messages", "the last message must be from the user");
        }
        Options o = options(b, 2048, 1);
        return new Answerer.Request(turns, o.sampling(), o.maxTokens(), o.stop(), o.seed());
    }

    /** The sampling fields both endpoints share (temperature, top_p, top_k, repetition_penalty, max_tokens, stop, seed, n). */
    private record Options(Sampling sampling, int maxTokens, List<String> stop, long seed) {}

    private static Options options(JsonNode b, int defaultMax, int minMax) {
        if (b.has("n") && !(b.get("n").isIntegralNumber() && b.get("n").asInt() == 1)) throw new BadRequest("n", "only n = 1 is supported");
        Sampling lima = Sampling.lima();
        float temperature = (float) number(b, "temperature", lima.temperature(), 0, 2);
        float topP = (float) number(b, "top_p", lima.topP(), 1e-6, 1);
        float penalty = (float) number(b, "repetition_penalty", lima.repetitionPenalty(), 1e-6, 100);
        int topK = (int) number(b, "top_k", 0, 0, 1e6);
        JsonNode maxNode = b.has("max_completion_tokens") ? b.get("max_completion_tokens") : b.get("max_tokens");
        int maxTokens = defaultMax;
        if (maxNode != null && !maxNode.isNull()) {
            if (!maxNode.isIntegralNumber() || !maxNode.canConvertToInt() || maxNode.asInt() < minMax) {
                throw new BadRequest("max_tokens", "max_tokens must be an integer in [" + minMax + ", 2147483647], got " + maxNode);
            }
            maxTokens = maxNode.asInt();
        }
        List<String> stop = new ArrayList<>();
        JsonNode s = b.get("stop");
        if (s != null && !s.isNull()) {
            if (s.isTextual()) {
                stop.add(s.asText());
            } else if (s.isArray() && s.size() <= 4) {
                for (JsonNode x : s) {
                    if (!x.isTextual() || x.asText().isEmpty()) throw new BadRequest("stop", "stop must hold non-empty strings, got " + x);
                    stop.add(x.asText());
                }
            } else {
                throw new BadRequest("stop", "stop must be a string or an array of at most 4 strings");
            }
        }
        JsonNode seedNode = b.get("seed");
        if (seedNode != null && !seedNode.isNull() && !(seedNode.isIntegralNumber() && seedNode.canConvertToLong())) {
            throw new BadRequest("seed", "seed must be an integer in the 64-bit range, got " + seedNode);
        }
        long seed = seedNode != null && !seedNode.isNull() ? seedNode.asLong() : System.nanoTime();
        return new Options(new Sampling(temperature, topP, topK, penalty, false), maxTokens, stop, seed);
    }

    private static String contentOf(JsonNode c, int i) {
        if (c == null || c.isNull()) throw new BadRequest("messages[" + i + "].content", "messages[" + i + "] has no content");
        if (c.isTextual()) return c.asText();
        if (c.isArray()) {  // [{"type": "text", "text": "..."}]
            StringBuilder sb = new StringBuilder();
            for (JsonNode part : c) {
                if (!"text".equals(part.path("type").asText())) {
                    throw new BadRequest("messages[" + i + "].content", "only text content parts are supported");
                }
                sb.append(part.path("text").asText());
            }
            return sb.toString();
        }
        throw new BadRequest("messages[" + i + "].content", "content must be a string or an array of text parts");
    }

    private static double number(JsonNode b, String key, double dflt, double lo, double hi) {
        JsonNode n = b.get(key);
        if (n == null || n.isNull()) return dflt;
        if (!n.isNumber()) throw new BadRequest(key, key + " must be a number");
        double v = n.asDouble();
        if (!(v >= lo && v <= hi)) throw new BadRequest(key, key + " must be in [" + lo + ", " + hi + "], got " + v);
        return v;
    }

    private static void send(HttpExchange ex, int status, ObjectNode body) throws IOException {
        byte[] bytes = JSON.writeValueAsBytes(body);
        ex.getResponseHeaders().set("Content-Type", "application/json");
        ex.sendResponseHeaders(status, bytes.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(bytes);
        }
    }

    private static void error(HttpExchange ex, int status, String code, String message, String param) throws IOException {
        ObjectNode o = JSON.createObjectNode();
        ObjectNode e = o.putObject("error").put("message", message)
                .put("type", status == 401 ? "authentication_error" : status >= 500 ? "server_error" : "invalid_request_error")
                .put("code", code);
        if (param == null) e.putNull("param");
        else e.put("param", param);
        send(ex, status, o);
    }

}
