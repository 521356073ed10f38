package dev.limactl.serve;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.List;
import java.util.Set;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.lifecycle.AfterContainer;
import net.jqwik.api.lifecycle.BeforeContainer;

/**
 * Property tests of the server's request parsing over real HTTP: bodies built from the chat
 * completion fields with values of every JSON type and range, and arbitrary text. Whatever arrives,
 * the answer is a well-formed success or an OpenAI-style client error naming the problem, never a
 * server error, and the server keeps serving.
 */
class RequestParserFuzzTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final JsonNodeFactory F = JsonNodeFactory.instance;
    private static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
    private static TinyServer server;

    @BeforeContainer
    static void start() {
        server = TinyServer.start("fuzz", 4);
    }

    @AfterContainer
    static void stop() {
        server.close();
    }

    @Property(tries = 150, seed = FuzzSeed.SEED)
    void structuredRequestsGetAnAnswerOrAClientError(@ForAll("requests") JsonNode body) throws Exception {
        check(JSON.writeValueAsString(body));
    }

    @Property(tries = 150, seed = FuzzSeed.SEED)
    void arbitraryTextGetsAClientError(@ForAll("text") String body) throws Exception {
        check(body);
    }

    private static void check(String body) throws Exception {
        HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + server.port() + "/v1/chat/completions"))
                .timeout(Duration.ofSeconds(60)).POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofString());
        if (!Set.of(200, 400, 404).contains(r.statusCode())) {
            throw new AssertionError("status " + r.statusCode() + " for " + body + ": " + r.body());
        }
        if (r.headers().firstValue("content-type").orElse("").startsWith("text/event-stream")) {
            if (r.statusCode() != 200 || !r.body().contains("data: [DONE]")) throw new AssertionError("broken stream for " + body + ": " + r.body());
            return;
        }
        JsonNode answer = JSON.readTree(r.body());
        if (r.statusCode() == 200) {
            if (!answer.path("choices").isArray() || !answer.path("choices").get(0).path("message").path("content").isTextual()) {
                throw new AssertionError("200 without an answer for " + body + ": " + r.body());
            }
        } else if (answer.path("error").path("message").asText().isBlank()) {
            throw new AssertionError("error without a message for " + body + ": " + r.body());
        }
    }

    @Provide
    Arbitrary<String> text() {
        Arbitrary<String> anything = Arbitraries.strings().ofMaxLength(300);
        Arbitrary<String> jsonish = Arbitraries.strings().withChars("{}[]\":,0123456789.-eEtrufalsn \\u").ofMaxLength(120);
        return Arbitraries.oneOf(anything, jsonish);
    }

    /** A JSON value of any type, small. */
    private static Arbitrary<JsonNode> anyValue() {
        return Arbitraries.oneOf(
                Arbitraries.just(F.nullNode()),
                Arbitraries.of(true, false).map(F::booleanNode),
                Arbitraries.longs().map(F::numberNode),
                Arbitraries.doubles().map(F::numberNode),
                Arbitraries.strings().ofMaxLength(40).map(F::textNode),
                Arbitraries.just(F.objectNode()),
                Arbitraries.just(F.arrayNode()));
    }

    private static Arbitrary<JsonNode> message() {
        Arbitrary<JsonNode> role = Arbitraries.oneOf(Arbitraries.of("system", "user", "assistant", "tool", "").map(F::textNode), anyValue());
        Arbitrary<JsonNode> content = Arbitraries.oneOf(Arbitraries.strings().alpha().ofMaxLength(60).map(F::textNode), anyValue());
        return Combinators.combine(role, content, Arbitraries.integers().between(0, 3)).as((ro, co, drop) -> {
            ObjectNode m = F.objectNode();
            if (drop != 1) m.set("role", ro);
            if (drop != 2) m.set("content", co);
            return m;
        });
    }

    @Provide
    Arbitrary<JsonNode> requests() {
        Arbitrary<JsonNode> messages = Arbitraries.oneOf(
                message().list().ofMaxSize(4).map(l -> { ArrayNode a = F.arrayNode(); a.addAll(l); return a; }),
                anyValue());
        Arbitrary<JsonNode> maxTokens = Arbitraries.oneOf(Arbitraries.integers().between(-5, 12).map(F::numberNode), anyValue());
        Arbitrary<JsonNode> prob = Arbitraries.oneOf(Arbitraries.doubles().between(-1, 3).map(F::numberNode), anyValue());
        Arbitrary<JsonNode> stream = Arbitraries.oneOf(Arbitraries.of(true, false).map(F::booleanNode), anyValue());
        Arbitrary<JsonNode> modelName = Arbitraries.oneOf(Arbitraries.just(F.textNode("fuzz")), anyValue());
        Arbitrary<List<Boolean>> present = Arbitraries.of(true, true, true, false).list().ofSize(6);
        return Combinators.combine(messages, maxTokens, prob, prob, stream, modelName, present).as((ms, mt, t, p, st, mo, has) -> {
            ObjectNode o = F.objectNode();
            if (has.get(0)) o.set("messages", ms);
            if (has.get(1)) o.set("max_tokens", mt);
            if (has.get(2)) o.set("temperature", t);
            if (has.get(3)) o.set("top_p", p);
            if (has.get(4)) o.set("stream", st);
            if (has.get(5)) o.set("model", mo);
            return o;
        });
    }
}
