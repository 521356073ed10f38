package dev.limactl.serve;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.core.http.StreamResponse;
import com.openai.errors.NotFoundException;
import com.openai.errors.UnauthorizedException;
import com.openai.models.chat.completions.ChatCompletion;
import com.openai.models.chat.completions.ChatCompletionChunk;
import com.openai.models.chat.completions.ChatCompletionCreateParams;
import com.openai.models.completions.Completion;
import com.openai.models.completions.CompletionCreateParams;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** limactl serve driven by the official OpenAI SDKs (Java, and Python where installed): chat, streaming, completions with logprobs, models, errors. */
class OpenAiSdkTest {
    static TinyServer server;
    static OpenAIClient client;

    @BeforeAll
    static void start() {
        server = TinyServer.start("tiny-lima", 8, "sekret", 512, 3);
        client = OpenAIOkHttpClient.builder().baseUrl("http://127.0.0.1:" + server.port() + "/v1").apiKey("sekret").maxRetries(0).build();
    }

    @AfterAll
    static void stop() {
        client.close();
        server.close();
    }

    static ChatCompletionCreateParams ask() {
        return ChatCompletionCreateParams.builder().model("tiny-lima").addSystemMessage("Be brief.").addUserMessage("How should I store coffee?")
                .maxCompletionTokens(6).temperature(0.0).seed(5L).build();
    }

    @Test
    void chatAndStreamingAgree() {
        ChatCompletion c = client.chat().completions().create(ask());
        String text = c.choices().get(0).message().content().orElseThrow();
        assertEquals(ChatCompletion.Choice.FinishReason.LENGTH, c.choices().get(0).finishReason());
        assertEquals(6, c.usage().orElseThrow().completionTokens());
        StringBuilder streamed = new StringBuilder();
        try (StreamResponse<ChatCompletionChunk> s = client.chat().completions().createStreaming(ask())) {
            s.stream().forEach(chunk -> chunk.choices().forEach(ch -> ch.delta().content().ifPresent(streamed::append)));
        }
        assertEquals(text, streamed.toString());
    }

    @Test
    void completionsWithEchoAndLogprobs() {
        Completion c = client.completions().create(CompletionCreateParams.builder().model("tiny-lima").prompt("How should I store coffee?")
                .maxTokens(0L).echo(true).logprobs(1L).build());
        var lp = c.choices().get(0).logprobs().orElseThrow();
        List<Double> logprobs = lp.tokenLogprobs().orElseThrow();
        assertEquals(lp.tokens().orElseThrow().size(), logprobs.size());
        assertNull(logprobs.get(0), "nothing precedes the first token");
        assertTrue(logprobs.subList(1, logprobs.size()).stream().allMatch(x -> x != null && x <= 0), logprobs.toString());
        assertEquals("How should I store coffee?", c.choices().get(0).text());
        Completion g = client.completions().create(CompletionCreateParams.builder().model("tiny-lima").prompt("Coffee").maxTokens(3L)
                .temperature(0.0).build());
        assertEquals(3, g.usage().orElseThrow().completionTokens());
    }

    @Test
    void modelsAndErrors() {
        assertEquals("tiny-lima", client.models().list().data().get(0).id());
        assertEquals("tiny-lima", client.models().retrieve("tiny-lima").id());
        assertThrows(NotFoundException.class, () -> client.chat().completions().create(ChatCompletionCreateParams.builder().model("gpt-4o")
                .addUserMessage("hi").build()));
        OpenAIClient wrong = OpenAIOkHttpClient.builder().baseUrl("http://127.0.0.1:" + server.port() + "/v1").apiKey("nope").maxRetries(0).build();
        try {
            assertThrows(UnauthorizedException.class, () -> wrong.models().list());
        } finally {
            wrong.close();
        }
    }

    /** The official OpenAI Python SDK (from the machine's package index) against the same server. */
    @Test
    void thePythonSdkToo() throws Exception {
        Process probe = new ProcessBuilder("python3", "-c", "import openai").redirectErrorStream(true).start();
        org.junit.jupiter.api.Assumptions.assumeTrue(probe.waitFor(60, java.util.concurrent.TimeUnit.SECONDS) && probe.exitValue() == 0,
                "python3 with openai is not installed: the Python SDK check is skipped");
        java.nio.file.Path script = java.nio.file.Files.createTempFile("openai_client", ".py");
        try (var in = OpenAiSdkTest.class.getResourceAsStream("openai_client.py")) {
            java.nio.file.Files.write(script, in.readAllBytes());
        }
        Process p = new ProcessBuilder("python3", script.toString(), "http://127.0.0.1:" + server.port() + "/v1", "sekret", "tiny-lima")
                .redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        assertTrue(p.waitFor(120, java.util.concurrent.TimeUnit.SECONDS) && p.exitValue() == 0, out);
        java.nio.file.Files.deleteIfExists(script);
        var r = new com.fasterxml.jackson.databind.ObjectMapper().readTree(out.lines().reduce((a, b) -> b).orElseThrow());
        assertEquals(r.get("chat").asText(), r.get("streamed").asText(), out);
        assertEquals("length", r.get("finish").asText());
        assertEquals(6, r.get("usage").asInt());
        assertEquals("How should I store coffee?", r.get("echo").asText());
        assertTrue(r.get("n_logprobs").asInt() > 5 && r.get("first_logprob").isNull(), out);
        assertEquals("tiny-lima", r.get("models").get(0).asText());
        assertEquals(404, r.get("error").asInt());
    }
}
