package dev.limactl.serve;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.OutputStream;
import java.net.Socket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * A bounded soak of the server on loopback: many concurrent clients mixing valid requests with
 * over-long prompts, oversized bodies, malformed JSON, wrong types and clients that leave mid-stream.
 * Every valid request must succeed, every bad one must fail alone with its own error, and the heap
 * must not grow with the number of requests served.
 */
class ServeSoakTest {
    static final ObjectMapper JSON = new ObjectMapper();
    static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

    enum Kind { VALID, STREAM, LONG_PROMPT, HUGE_BODY, MALFORMED, WRONG_TYPE, LEAVES }

    record Outcome(Kind kind, int status, String body) {}

    @Test
    void mixedConcurrentClientsGetTheirOwnAnswersAndMemoryStaysBounded() throws Exception {
        try (TinyServer server = TinyServer.start("soak", 8)) {
            long heapAfterWarmup = 0;
            for (int round = 0; round < 3; round++) {
                List<Outcome> outcomes = round(server.port(), 120, round);
                int valid = 0;
                for (Outcome o : outcomes) {
                    switch (o.kind()) {
                        case VALID, STREAM -> {
                            assertEquals(200, o.status(), o.kind() + ": " + o.body());
                            valid++;
                        }
                        case LONG_PROMPT -> assertEquals(400, o.status(), o.body());
                        case HUGE_BODY -> assertEquals(413, o.status(), o.body());
                        case MALFORMED, WRONG_TYPE -> {
                            assertEquals(400, o.status(), o.body());
                            assertTrue(o.body().contains("invalid_request_error"), o.body());
                        }
                        case LEAVES -> { }
                    }
                }
                assertTrue(valid > 20, "valid requests in the mix: " + valid);
                System.gc();
                Thread.sleep(200);
                long heap = Runtime.getRuntime().totalMemory() - Runtime.getRuntime().freeMemory();
                if (round == 0) heapAfterWarmup = heap;
                else assertTrue(heap < heapAfterWarmup + (256L << 20), "heap grew from " + heapAfterWarmup + " to " + heap);
            }
        }
    }

    static List<Outcome> round(int port, int n, int seed) throws Exception {
        Random rnd = new Random(seed);
        ExecutorService pool = Executors.newFixedThreadPool(16);
        List<Future<Outcome>> fs = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            Kind k = Kind.values()[rnd.nextInt(Kind.values().length)];
            int id = i;
            fs.add(pool.submit(() -> send(port, k, id)));
        }
        List<Outcome> out = new ArrayList<>();
        for (Future<Outcome> f : fs) out.add(f.get(120, TimeUnit.SECONDS));
        pool.shutdown();
        return out;
    }

    static Outcome send(int port, Kind k, int id) throws Exception {
        String ask = "{\"messages\": [{\"role\": \"user\", \"content\": \"Question " + id + "?\"}], \"max_tokens\": 6, \"seed\": " + id;
        String body = switch (k) {
            case VALID -> ask + "}";
            case STREAM, LEAVES -> ask + ", \"stream\": true}";
            case LONG_PROMPT -> "{\"messages\": [{\"role\": \"user\", \"content\": \"" + "coffee ".repeat(600) + "\"}], \"max_tokens\": 6}";
            case HUGE_BODY -> "{\"messages\": [{\"role\": \"user\", \"content\": \"" + "x".repeat(OpenAiServer.MAX_BODY_BYTES) + "\"}]}";
            case MALFORMED -> "{\"messages\": [{\"role\": \"user\", \"content\": \"cut";
            case WRONG_TYPE -> ask + ", \"max_tokens\": \"six\"}";
        };
        if (k == Kind.LEAVES) {
            try (Socket s = new Socket("127.0.0.1", port)) {
                byte[] b = body.getBytes(StandardCharsets.UTF_8);
                OutputStream os = s.getOutputStream();
                os.write(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + b.length
                        + "\r\n\r\n").getBytes(StandardCharsets.UTF_8));
                os.write(b);
                os.flush();
                s.getInputStream().read(new byte[32]);
            }
            return new Outcome(k, 0, "");
        }
        HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/v1/chat/completions"))
                .timeout(Duration.ofSeconds(60)).POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofString());
        if (k == Kind.STREAM && r.statusCode() == 200) {
            assertTrue(r.body().contains("data: [DONE]"), r.body());
        } else if (k == Kind.VALID && r.statusCode() == 200) {
            JsonNode j = JSON.readTree(r.body());
            assertTrue(j.at("/usage/completion_tokens").asInt() <= 6, r.body());
        }
        return new Outcome(k, r.statusCode(), r.body());
    }
}
