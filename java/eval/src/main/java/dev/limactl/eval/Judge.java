package dev.limactl.eval;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicLong;

/**
 * An LLM judge over the OpenAI chat-completions protocol (any server with that API: OpenAI,
 * vLLM, limactl serve), with the JDK's HTTP client and Jackson: timeouts, retries with exponential
 * backoff on 429/5xx/network errors (honouring Retry-After), a concurrency limit, and the on-disk
 * {@link JudgeCache} in front of every call.
 */
public final class Judge {
    public record Config(String baseUrl, String model, String apiKey, Duration timeout, int maxRetries, Duration backoff,
                         int concurrency, double temperature) {
        /** Base URL, model and key from the environment where not given: LIMACTL_JUDGE_URL, _MODEL, OPENAI_API_KEY. */
        public static Config of(String baseUrl, String model, String apiKey) {
            String url = baseUrl != null ? baseUrl : System.getenv().getOrDefault("LIMACTL_JUDGE_URL", "https://api.openai.com/v1");
            String m = model != null ? model : System.getenv().getOrDefault("LIMACTL_JUDGE_MODEL", "gpt-4");
            String key = apiKey != null ? apiKey : System.getenv("OPENAI_API_KEY");
            return new Config(url, m, key, Duration.ofSeconds(120), 5, Duration.ofSeconds(1), 4, 0.0);
        }
    }

    private static final ObjectMapper JSON = new ObjectMapper();
    private final Config cfg;
    private final JudgeCache cache;
    private final HttpClient http;
    private final Semaphore slots;
    public final AtomicLong calls = new AtomicLong(), cached = new AtomicLong(), retries = new AtomicLong();

    public Judge(Config cfg, JudgeCache cache) {
        this.cfg = cfg;
        this.cache = cache;
        this.http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        this.slots = new Semaphore(Math.max(1, cfg.concurrency()));
    }

    public String model() {
        return cfg.model();
    }

    /** The judge's answer to a prompt; key identifies the question for the cache. */
    public String ask(String key, String prompt, long seed) {
        String hit = cache.get(key);
        if (hit != null) {
            cached.incrementAndGet();
            return hit;
        }
        String answer;
        try {
            slots.acquire();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new JudgeException("interrupted");
        }
        try {
            answer = call(prompt, seed);
        } finally {
            slots.release();
        }
        cache.put(key, answer);
        return answer;
    }

    private String call(String prompt, long seed) {
        ObjectNode body = JSON.createObjectNode().put("model", cfg.model()).put("temperature", cfg.temperature()).put("seed", seed);
        body.putArray("messages").addObject().put("role", "user").put("content", prompt);
        String url = cfg.baseUrl().replaceAll("/+$", "") + "/chat/completions";
        long wait = cfg.backoff().toMillis();
        String last = "";
        for (int attempt = 0; attempt <= cfg.maxRetries(); attempt++) {
            if (attempt > 0) {
                retries.incrementAndGet();
                sleep(wait);
                wait = Math.min(wait * 2, 60_000);
            }
            HttpRequest.Builder rb = HttpRequest.newBuilder(URI.create(url)).timeout(cfg.timeout())
                    .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(body.toString()));
            if (cfg.apiKey() != null) rb.header("Authorization", "Bearer " + cfg.apiKey());
            HttpResponse<String> r;
            try {
                calls.incrementAndGet();
                r = http.send(rb.build(), HttpResponse.BodyHandlers.ofString());
            } catch (IOException e) {
                last = "network error: " + describe(e);
                continue;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new JudgeException("interrupted");
            }
            if (r.statusCode() == 200) {
                try {
                    JsonNode c = JSON.readTree(r.body()).at("/choices/0/message/content");
                    if (c.isTextual()) return c.asText();
                    last = "response without choices[0].message.content: " + abbreviate(r.body());
                } catch (IOException e) {
                    last = "response is not JSON: " + abbreviate(r.body());
                }
                continue;
            }
            last = "HTTP " + r.statusCode() + ": " + abbreviate(r.body());
            if (r.statusCode() == 429 || r.statusCode() >= 500) {
                wait = Math.max(wait, r.headers().firstValue("Retry-After").map(Judge::seconds).orElse(0L) * 1000);
                continue;
            }
            throw new JudgeException("judge " + cfg.model() + " at " + url + " refused the request: " + last);  // 4xx: no retry
        }
        throw new JudgeException("judge " + cfg.model() + " at " + url + " failed after " + (cfg.maxRetries() + 1) + " attempts: " + last);
    }

    /** What went wrong on the network, in words (the JDK's exceptions often carry no message). */
    static String describe(IOException e) {
        if (e instanceof java.net.http.HttpConnectTimeoutException) return "no connection within 10 s";
        if (e instanceof java.net.http.HttpTimeoutException) return "no answer within the timeout";
        if (e instanceof java.net.ConnectException) return "connection refused (is the judge server running at that address?)";
        if (e instanceof java.net.UnknownHostException) return "unknown host " + e.getMessage();
        if (e instanceof java.nio.channels.ClosedChannelException || e instanceof java.io.EOFException) return "the connection was closed";
        return e.getMessage() != null ? e.getMessage() : "input/output error";
    }

    private static long seconds(String v) {
        try {
            return Long.parseLong(v.trim());
        } catch (NumberFormatException e) {
            return 0;
        }
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new JudgeException("interrupted");
        }
    }

    private static String abbreviate(String s) {
        return s.length() > 300 ? s.substring(0, 300) + "..." : s;
    }

    /** A stable per-question seed for judges that accept one. */
    static long seedOf(String key) {
        return Long.parseUnsignedLong(key.substring(0, 15), 16);
    }

    static List<String> lines(String s) {
        return s.lines().map(String::strip).filter(l -> !l.isEmpty()).toList();
    }
}
