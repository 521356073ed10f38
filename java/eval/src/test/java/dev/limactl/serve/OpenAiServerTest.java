package dev.limactl.serve;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.limactl.engine.Model;
import dev.limactl.engine.ModelConfig;
import dev.limactl.generate.Answerer;
import dev.limactl.tokenizer.Tokenizer;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The server driven by the JDK's HTTP client on loopback, like an OpenAI SDK with a base URL would. */
class OpenAiServerTest {
    static Tokenizer tok;
    static Model model;
    static OpenAiServer server;
    static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    static final ObjectMapper JSON = new ObjectMapper();

    @BeforeAll
    static void start() throws Exception {
        tok = Tokenizer.open(Path.of("../src/main/resources/dev/limactl/demo/tokenizer.model"));
        model = Model.random(ModelConfig.llama(1025, 32, 64, 2, 4, 2, 512), 3);
        server = new OpenAiServer(new Answerer(model, tok, 1024, 512), "tiny-lima", "127.0.0.1", 0, "sekret", 8);
        server.start();
    }

    @AfterAll
    static void stop() {
        server.close();
        model.close();
        tok.close();
    }

    static HttpResponse<String> call(String method, String path, String body, String key) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + server.port() + path))
                .timeout(Duration.ofSeconds(60)).method(method, body == null ? HttpRequest.BodyPublishers.noBody()
                        : HttpRequest.BodyPublishers.ofString(body));
        if (key != null) b.header("Authorization", "Bearer " + key);
        return HTTP.send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    static final String ASK = "{\"model\": \"tiny-lima\", \"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
            + " {\"role\": \"user\", \"content\": \"How should I store coffee?\"}], \"temperature\": 0, \"max_tokens\": 12, \"seed\": 5";

    @Test
    void modelsAndANonStreamingCompletion() throws Exception {
        HttpResponse<String> m = call("GET", "/v1/models", null, "sekret");
        assertEquals(200, m.statusCode());
        assertEquals("tiny-lima", JSON.readTree(m.body()).at("/data/0/id").asText());
        HttpResponse<String> r = call("POST", "/v1/chat/completions", ASK + "}", "sekret");
        assertEquals(200, r.statusCode(), r.body());
        JsonNode j = JSON.readTree(r.body());
        assertEquals("chat.completion", j.get("object").asText());
        assertEquals("assistant", j.at("/choices/0/message/role").asText());
        assertEquals("length", j.at("/choices/0/finish_reason").asText());
        assertEquals(12, j.at("/usage/completion_tokens").asInt());
        assertTrue(j.at("/usage/prompt_tokens").asInt() > 5);
    }

    /** /v1/completions with echo and logprobs scores a prompt as the model does (lm-evaluation-harness's loglikelihood request). */
    @Test
    void completionsScorePromptsAndContinueThem() throws Exception {
        int[] ids = {1, 50, 300, 77, 5, 900, 12};
        HttpResponse<String> r = call("POST", "/v1/completions", "{\"model\": \"tiny-lima\", \"prompt\": " + java.util.Arrays.toString(ids)
                + ", \"echo\": true, \"max_tokens\": 0, \"logprobs\": 1}", "sekret");
        assertEquals(200, r.statusCode(), r.body());
        JsonNode lp = JSON.readTree(r.body()).at("/choices/0/logprobs");
        assertEquals("text_completion", JSON.readTree(r.body()).get("object").asText());
        assertEquals(ids.length, lp.get("tokens").size());
        assertTrue(lp.get("token_logprobs").get(0).isNull() && lp.get("top_logprobs").get(0).isNull());
        float[] want;
        try (dev.limactl.engine.Batch b = new dev.limactl.engine.Batch(1, ids.length).set(ids, new byte[ids.length], null)) {
            want = model.tokenLogprobs(b);
        }
        for (int j = 1; j < ids.length; j++) {
            assertEquals(want[j], lp.get("token_logprobs").get(j).floatValue(), 1e-4, "token " + j);
            JsonNode top = lp.get("top_logprobs").get(j);
            assertEquals(1, top.size());
            assertTrue(top.elements().next().floatValue() >= lp.get("token_logprobs").get(j).floatValue() - 1e-6, "the top token is the most likely");
        }
        // a text prompt continued greedily: each generated token is the most likely one, and streaming gives the same text
        String ask = "{\"prompt\": \"How should I store coffee?\", \"max_tokens\": 6, \"temperature\": 0, \"repetition_penalty\": 1, \"seed\": 3";
        JsonNode g = JSON.readTree(call("POST", "/v1/completions", ask + ", \"logprobs\": 2}", "sekret").body());
        JsonNode glp = g.at("/choices/0/logprobs");
        assertEquals(6, glp.get("tokens").size(), g.toString());
        for (int j = 0; j < 6; j++) {
            JsonNode top = glp.get("top_logprobs").get(j);
            assertEquals(2, top.size());
            assertEquals(top.elements().next().floatValue(), glp.get("token_logprobs").get(j).floatValue(), 1e-5, "greedy picks the top token");
        }
        assertEquals("length", g.at("/choices/0/finish_reason").asText());
        // the text continues the prompt: a word boundary at its start keeps its space
        String cont = g.at("/choices/0/text").asText();
        assertEquals(glp.get("tokens").get(0).asText().startsWith(" "), cont.startsWith(" "), g.toString());
        HttpResponse<String> st = call("POST", "/v1/completions", ask + ", \"stream\": true}", "sekret");
        StringBuilder text = new StringBuilder();
        for (String line : st.body().split("\n")) {
            if (line.startsWith("data: {")) text.append(JSON.readTree(line.substring(6)).at("/choices/0/text").asText());
        }
        assertEquals(g.at("/choices/0/text").asText(), text.toString());
        // chat logprobs: one entry per generated token, the greedy token on top
        JsonNode c = JSON.readTree(call("POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}],"
                + " \"max_tokens\": 4, \"temperature\": 0, \"repetition_penalty\": 1, \"logprobs\": true, \"top_logprobs\": 3}", "sekret").body());
        JsonNode content = c.at("/choices/0/logprobs/content");
        assertEquals(c.at("/usage/completion_tokens").asInt(), content.size(), c.toString());
        for (JsonNode e : content) {
            assertEquals(3, e.get("top_logprobs").size());
            assertEquals(e.get("top_logprobs").get(0).get("logprob").floatValue(), e.get("logprob").floatValue(), 1e-5);
            assertEquals(e.get("top_logprobs").get(0).get("token").asText(), e.get("token").asText());
        }
        // bad requests, each named
        String[][] bad = {{"{}", "prompt"}, {"{\"prompt\": [1, 999999]}", "prompt"}, {"{\"prompt\": \"x\", \"max_tokens\": 0}", "max_tokens"},
                {"{\"prompt\": \"x\", \"logprobs\": 21}", "logprobs"}, {"{\"prompt\": \"x\", \"logprobs\": 1, \"stream\": true}", "stream"},
                {"{\"prompt\": \"x\", \"suffix\": \"y\"}", "suffix"}, {"{\"prompt\": [\"a\", \"b\"]}", "prompt"}};
        for (String[] b : bad) {
            HttpResponse<String> e = call("POST", "/v1/completions", b[0], "sekret");
            assertEquals(400, e.statusCode(), b[0] + " -> " + e.body());
            assertEquals(b[1], JSON.readTree(e.body()).at("/error/param").asText(), e.body());
        }
        assertEquals(400, call("POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"top_logprobs\": 2}",
                "sekret").statusCode(), "top_logprobs without logprobs");
    }

    /** GET /health without a key, GET /v1/models/{id}, and the usage chunk of stream_options.include_usage. */
    @Test
    void healthModelByIdAndStreamUsage() throws Exception {
        HttpResponse<String> h = call("GET", "/health", null, null);
        assertEquals(200, h.statusCode(), h.body());
        assertEquals("ok", JSON.readTree(h.body()).get("status").asText());
        assertEquals(405, call("POST", "/health", "{}", null).statusCode());
        HttpResponse<String> m = call("GET", "/v1/models/tiny-lima", null, "sekret");
        assertEquals(200, m.statusCode(), m.body());
        assertEquals("model", JSON.readTree(m.body()).get("object").asText());
        assertEquals("tiny-lima", JSON.readTree(m.body()).get("id").asText());
        HttpResponse<String> none = call("GET", "/v1/models/gpt-4", null, "sekret");
        assertEquals(404, none.statusCode());
        assertEquals("model_not_found", JSON.readTree(none.body()).at("/error/code").asText(JSON.readTree(none.body()).at("/error/type").asText()));
        assertEquals(401, call("GET", "/v1/models/tiny-lima", null, null).statusCode());
        HttpResponse<String> s = call("POST", "/v1/chat/completions", ASK + ", \"stream\": true, \"stream_options\": {\"include_usage\": true}}", "sekret");
        assertEquals(200, s.statusCode());
        List<JsonNode> chunks = new ArrayList<>();
        for (String line : s.body().split("\n")) {
            if (line.startsWith("data: {")) chunks.add(JSON.readTree(line.substring(6)));
        }
        JsonNode last = chunks.get(chunks.size() - 1);
        assertEquals(0, last.get("choices").size(), last.toString());
        assertEquals(12, last.at("/usage/completion_tokens").asInt());
        assertTrue(chunks.subList(0, chunks.size() - 1).stream().noneMatch(c -> c.has("usage")), "usage comes once, last");
        assertEquals(400, call("POST", "/v1/chat/completions", ASK + ", \"stream\": true, \"stream_options\": {\"include_usage\": \"yes\"}}",
                "sekret").statusCode());
    }

    @Test
    void streamingSendsDeltasThatAddUpToTheSameAnswer() throws Exception {
        String plain = JSON.readTree(call("POST", "/v1/chat/completions", ASK + "}", "sekret").body())
                .at("/choices/0/message/content").asText();
        HttpResponse<String> s = call("POST", "/v1/chat/completions", ASK + ", \"stream\": true}", "sekret");
        assertEquals(200, s.statusCode());
        assertTrue(s.headers().firstValue("Content-Type").orElse("").startsWith("text/event-stream"));
        StringBuilder text = new StringBuilder();
        String finish = null;
        List<String> events = new ArrayList<>();
        for (String line : s.body().split("\n")) {
            if (!line.startsWith("data: ")) continue;
            events.add(line);
            if (line.equals("data: [DONE]")) continue;
            JsonNode c = JSON.readTree(line.substring(6));
            assertEquals("chat.completion.chunk", c.get("object").asText());
            text.append(c.at("/choices/0/delta/content").asText(""));
            if (!c.at("/choices/0/finish_reason").isNull()) finish = c.at("/choices/0/finish_reason").asText();
        }
        assertEquals("data: [DONE]", events.get(events.size() - 1));
        assertEquals(plain, text.toString());
        assertEquals("length", finish);
    }

    @Test
    void malformedRequestsGetOpenAiStyleErrors() throws Exception {
        HttpResponse<String> r = call("POST", "/v1/chat/completions", "{not json", "sekret");
        assertEquals(400, r.statusCode());
        assertEquals("invalid_request_error", JSON.readTree(r.body()).at("/error/type").asText());
        r = call("POST", "/v1/chat/completions", "{\"messages\": []}", "sekret");
        assertEquals(400, r.statusCode());
        assertEquals("messages", JSON.readTree(r.body()).at("/error/param").asText());
        r = call("POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"temperature\": 9}", "sekret");
        assertEquals(400, r.statusCode());
        assertEquals("temperature", JSON.readTree(r.body()).at("/error/param").asText());
        r = call("POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}", "sekret");
        assertEquals(400, r.statusCode());
        // what the model cannot honour is refused, naming the field, not ignored
        r = call("POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": [{\"type\":"
                + " \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": \"required\"}", "sekret");
        assertEquals(400, r.statusCode());
        assertEquals("tool_choice", JSON.readTree(r.body()).at("/error/param").asText());
        r = call("POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response_format\":"
                + " {\"type\": \"json_object\"}}", "sekret");
        assertEquals(400, r.statusCode());
        assertTrue(JSON.readTree(r.body()).at("/error/message").asText().contains("cannot constrain replies to JSON"), r.body());
        r = call("POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": 2, \"tools\":"
                + " [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": \"auto\", \"response_format\": {\"type\":"
                + " \"text\"}}", "sekret");
        assertEquals(200, r.statusCode(), "tools offered with tool_choice auto are answered in text: " + r.body());
        r = call("POST", "/v1/chat/completions", ASK + "}", "wrong");
        assertEquals(401, r.statusCode());
        assertEquals("authentication_error", JSON.readTree(r.body()).at("/error/type").asText());
        assertEquals(401, call("GET", "/v1/models", null, null).statusCode());
        assertEquals(405, call("GET", "/v1/chat/completions", null, "sekret").statusCode());
        assertEquals(404, call("GET", "/v2/nothing", null, "sekret").statusCode());
    }

    @Test
    void concurrentRequestsAreServedTogether() throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(6);
        List<Future<HttpResponse<String>>> fs = new ArrayList<>();
        for (int i = 0; i < 6; i++) {
            String body = "{\"messages\": [{\"role\": \"user\", \"content\": \"Question number " + i + "?\"}], \"max_tokens\": 8, \"seed\": " + i + "}";
            fs.add(pool.submit(() -> call("POST", "/v1/chat/completions", body, "sekret")));
        }
        for (Future<HttpResponse<String>> f : fs) {
            HttpResponse<String> r = f.get();
            assertEquals(200, r.statusCode(), r.body());
            assertTrue(JSON.readTree(r.body()).at("/usage/completion_tokens").asInt() <= 8);
        }
        pool.shutdown();
    }

    @Test
    void aBadRequestInABatchFailsAloneAndHugeBudgetsAreCutToTheContext() throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(8);
        List<Future<HttpResponse<String>>> valid = new ArrayList<>();
        String longPrompt = "coffee ".repeat(2000);  // more tokens than the 512-token context
        Future<HttpResponse<String>> tooLong = null, huge = null;
        for (int round = 0; round < 3; round++) {
            for (int i = 0; i < 5; i++) {
                String body = "{\"messages\": [{\"role\": \"user\", \"content\": \"Question " + i + "?\"}], \"max_tokens\": 6, \"seed\": " + i + "}";
                valid.add(pool.submit(() -> call("POST", "/v1/chat/completions", body, "sekret")));
            }
            tooLong = pool.submit(() -> call("POST", "/v1/chat/completions",
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"" + longPrompt + "\"}], \"max_tokens\": 6}", "sekret"));
            huge = pool.submit(() -> call("POST", "/v1/chat/completions",
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi?\"}], \"max_tokens\": 2147483647, \"temperature\": 0}", "sekret"));
        }
        for (Future<HttpResponse<String>> f : valid) {
            HttpResponse<String> r = f.get();
            assertEquals(200, r.statusCode(), r.body());
        }
        HttpResponse<String> bad = tooLong.get();
        assertEquals(400, bad.statusCode(), bad.body());
        assertTrue(bad.body().contains("the context holds 512"), bad.body());
        HttpResponse<String> big = huge.get();
        assertEquals(200, big.statusCode(), big.body());
        String finish = JSON.readTree(big.body()).at("/choices/0/finish_reason").asText();
        assertTrue(finish.equals("length") || finish.equals("stop"), big.body());
        assertTrue(JSON.readTree(big.body()).at("/usage/total_tokens").asInt() <= 512, big.body());
        pool.shutdown();
    }

    @Test
    void requestFieldsAreStrictAndUnknownModelsAre404() throws Exception {
        String[][] bad = {
                {"\"max_tokens\": 1.5", "max_tokens"}, {"\"max_tokens\": \"8\"", "max_tokens"}, {"\"seed\": \"abc\"", "seed"},
                {"\"seed\": 1180591620717411303424", "seed"}, {"\"stream\": \"yes\"", "stream"}, {"\"stop\": [{}]", "stop"},
                {"\"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]", "stop"}, {"\"n\": 1.0", "n"}, {"\"temperature\": \"hot\"", "temperature"}};
        for (String[] b : bad) {
            HttpResponse<String> r = call("POST", "/v1/chat/completions",
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], " + b[0] + "}", "sekret");
            assertEquals(400, r.statusCode(), b[0] + " -> " + r.body());
            assertEquals(b[1], JSON.readTree(r.body()).at("/error/param").asText(), b[0] + " -> " + r.body());
            assertTrue(!r.body().contains("java.") && !r.body().contains("Exception"), r.body());
        }
        HttpResponse<String> m = call("POST", "/v1/chat/completions",
                "{\"model\": \"gpt-4\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}", "sekret");
        assertEquals(404, m.statusCode(), m.body());
        assertEquals("model_not_found", JSON.readTree(m.body()).at("/error/code").asText(), m.body());
        HttpResponse<String> big = call("POST", "/v1/chat/completions",
                "{\"messages\": [{\"role\": \"user\", \"content\": \"" + "x".repeat(OpenAiServer.MAX_BODY_BYTES) + "\"}]}", "sekret");
        assertEquals(413, big.statusCode());
        HttpResponse<String> wrongKey = call("POST", "/v1/chat/completions", ASK + "}", "sekreT");
        assertEquals(401, wrongKey.statusCode());
    }

    @Test
    void aClientThatLeavesMidStreamStopsItsRowAndTheBatchGoesOn() throws Exception {
        List<String> log = java.util.Collections.synchronizedList(new ArrayList<>());
        try (OpenAiServer logged = new OpenAiServer(new Answerer(model, tok, 1024, 512), "tiny-lima", "127.0.0.1", 0, "sekret", 8, log::add)) {
            logged.start();
            leaveMidStream(logged.port());
            long deadline = System.currentTimeMillis() + 20_000;
            while (log.stream().noneMatch(l -> l.contains("cancelled")) && System.currentTimeMillis() < deadline) Thread.sleep(20);
            String line = log.stream().filter(l -> l.contains("cancelled")).findFirst().orElse(String.join("\n", log));
            assertTrue(line.startsWith("POST /v1/chat/completions 200 tokens=") && line.contains("cancelled"), line);
            int tokens = Integer.parseInt(line.replaceAll(".*tokens=(\\d+).*", "$1"));
            assertTrue(tokens < 300, "the row stopped soon after the client left: " + line);
            assertTrue(!line.contains("sekret") && !line.contains("story"), "no key or content in the access log: " + line);
        }
        // the server goes on serving others
        HttpResponse<String> r = call("POST", "/v1/chat/completions", ASK + "}", "sekret");
        assertEquals(200, r.statusCode(), r.body());
    }

    /** A streaming request whose client reads the first bytes, then closes the connection. */
    static void leaveMidStream(int port) throws Exception {
        try (java.net.Socket sock = new java.net.Socket("127.0.0.1", port)) {
            String body = "{\"messages\": [{\"role\": \"user\", \"content\": \"Tell a long story.\"}], \"stream\": true,"
                    + " \"temperature\": 0, \"max_tokens\": 480}";
            byte[] bytes = body.getBytes(java.nio.charset.StandardCharsets.UTF_8);
            sock.getOutputStream().write(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekret\r\n"
                    + "Content-Type: application/json\r\nContent-Length: " + bytes.length + "\r\n\r\n").getBytes(java.nio.charset.StandardCharsets.UTF_8));
            sock.getOutputStream().write(bytes);
            sock.getOutputStream().flush();
            // read until the first event has arrived (the request is in a batch from then on), then leave
            StringBuilder got = new StringBuilder();
            byte[] buf = new byte[256];
            while (got.indexOf("data:") < 0) {
                int n = sock.getInputStream().read(buf);
                assertTrue(n > 0, "the stream ended before its first event: " + got);
                got.append(new String(buf, 0, n, java.nio.charset.StandardCharsets.UTF_8));
            }
        }
    }
}
