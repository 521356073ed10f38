package dev.limactl.generate;

import dev.limactl.chat.ChatFormat;
import dev.limactl.data.Turn;
import dev.limactl.engine.Generator;
import dev.limactl.engine.Model;
import dev.limactl.engine.Sampling;
import dev.limactl.tokenizer.Tokenizer;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * Answers conversations with a LIMA-format model: the conversation is rendered with the training
 * chat format (BOS, utterances ended by EOT), then tokens are drawn until EOT or EOS, a stop string,
 * or maxNewTokens (LIMA: 2048). Several conversations decode together as one batch.
 */
public final class Answerer {
    /** What a request asks for; seed makes the samples reproducible. */
    public record Request(List<Turn> conversation, Sampling sampling, int maxNewTokens, List<String> stop, long seed) {
        public Request {
            if (conversation.isEmpty() || !conversation.get(conversation.size() - 1).role().equals(Turn.USER)) {
                throw new IllegalArgumentException("a conversation to answer must end with a user turn");
            }
            if (maxNewTokens < 1) throw new IllegalArgumentException("max_new_tokens must be >= 1, got " + maxNewTokens);
            stop = stop == null ? List.of() : List.copyOf(stop);
        }
    }

    /**
     * finish: "eot" (the model ended its turn), "eos", "stop" (a stop string), "length" (maxNewTokens or
     * the context), "cancelled" (the caller gave up on it).
     */
    public record Answer(String text, int promptTokens, int generatedTokens, String finish) {}

    private final Model model;
    private final Tokenizer tokenizer;
    private final ChatFormat format;
    private final int contextLength;

    public Answerer(Model model, Tokenizer tokenizer, int eotId, int contextLength) {
        this.model = model;
        this.tokenizer = tokenizer;
        this.format = new ChatFormat(tokenizer, eotId, Integer.MAX_VALUE);
        this.contextLength = Math.min(contextLength, model.config().maxPositionEmbeddings());
    }

    public Answer generate(Request r) {
        return generate(List.of(r), (i, text) -> { }).get(0);
    }

    /** Streams a single answer: onText receives each new piece of text as it is decoded. */
    public Answer stream(Request r, Consumer<String> onText) {
        return generate(List.of(r), (i, text) -> onText.accept(text)).get(0);
    }

    public interface Listener {
        void onText(int request, String newText);
    }

    /**
     * A request checked and tokenised: what a batch row decodes. cancel() (a client that went away)
     * ends its row at the next step with finish "cancelled"; the other rows go on.
     */
    public record Prepared(Request request, int[] prompt, java.util.concurrent.atomic.AtomicBoolean cancelled) {
        public Prepared(Request request, int[] prompt) {
            this(request, prompt, new java.util.concurrent.atomic.AtomicBoolean());
        }

        public void cancel() {
            cancelled.set(true);
        }
    }

    /**
     * Checks a request against the context and tokenises its conversation, so that a request that
     * cannot run fails on its own (and tokenising stays off the thread that decodes batches). The
     * prompt must leave room for one new token; the answer's budget is cut to what the context holds.
     */
    public Prepared prepare(Request r) {
        int[] prompt = format.prompt(r.conversation());
        if (prompt.length >= contextLength) {
            throw new IllegalArgumentException("the prompt has " + prompt.length + " tokens; the context holds " + contextLength
                    + ", which leaves no room for an answer");
        }
        return new Prepared(r, prompt);
    }

    /** Decodes all requests together (one batch row each). */
    public List<Answer> generate(List<Request> requests, Listener listener) {
        return generatePrepared(requests.stream().map(this::prepare).toList(), listener);
    }

    /** Decodes prepared requests together (one batch row each). */
    public List<Answer> generatePrepared(List<Prepared> prepared, Listener listener) {
        int n = prepared.size();
        List<Request> requests = prepared.stream().map(Prepared::request).toList();
        int[][] prompts = new int[n][];
        long[] seeds = new long[n];
        int longest = 0;
        long budget = 0;
        for (int i = 0; i < n; i++) {
            prompts[i] = prepared.get(i).prompt();
            seeds[i] = requests.get(i).seed();
            longest = Math.max(longest, prompts[i].length);
            budget = Math.max(budget, requests.get(i).maxNewTokens());
        }
        int maxLen = (int) Math.min(contextLength, longest + budget + 1);  // 64-bit: a budget of 2^31 - 1 is fine
        TextStream[] out = new TextStream[n];
        String[] text = new String[n], finish = new String[n];
        boolean[] active = new boolean[n];
        for (int i = 0; i < n; i++) {
            out[i] = new TextStream(tokenizer);
            active[i] = true;
        }
        int longestStop = 0;
        for (Request q : requests) {
            for (String st : q.stop()) longestStop = Math.max(longestStop, st.length());
        }
        try (Generator g = new Generator(model, n, maxLen)) {
            g.start(prompts, seeds);
            Sampling s = requests.get(0).sampling();
            for (Request q : requests) {
                if (!q.sampling().equals(s)) throw new IllegalArgumentException("a batch shares one sampling setting");
            }
            int remaining = n;
            while (remaining > 0) {
                int[] tok = g.step(s, active);
                for (int i = 0; i < n; i++) {
                    if (!active[i]) continue;
                    Request q = requests.get(i);
                    int t = tok[i];
                    String reason = null;
                    if (prepared.get(i).cancelled().get()) reason = "cancelled";
                    else if (t == format.eotId()) reason = "eot";
                    else if (t == tokenizer.eosId()) reason = "eos";
                    else {
                        int before = out[i].stableLength();
                        String piece = out[i].add(t);
                        // a stop string can only end in the new piece: search from where it could start
                        int cut = piece.isEmpty() ? -1 : firstStop(out[i], q.stop(), Math.max(0, before - longestStop));
                        if (cut >= 0) {
                            reason = "stop";
                            String all = out[i].finish();
                            text[i] = all.substring(0, cut);
                            if (cut > before) listener.onText(i, text[i].substring(before));
                        } else if (!piece.isEmpty()) {
                            listener.onText(i, piece);
                        }
                        if (reason == null && (out[i].tokens() >= q.maxNewTokens() || prompts[i].length + out[i].tokens() + 1 >= maxLen)) {
                            reason = "length";
                        }
                    }
                    if (reason != null) {
                        if (text[i] == null) {
                            text[i] = out[i].finish();  // with a tail that never became stable, as it is
                            int shown = out[i].stableLength();
                            if (text[i].length() > shown) listener.onText(i, text[i].substring(shown));
                        }
                        finish[i] = reason;
                        active[i] = false;
                        remaining--;
                    }
                }
            }
        }
        List<Answer> answers = new ArrayList<>();
        for (int i = 0; i < n; i++) answers.add(new Answer(text[i], prompts[i].length, out[i].tokens(), finish[i]));
        return answers;
    }

    /** Where the earliest stop string found at or after `from` starts in text, or -1. */
    private static int firstStop(TextStream text, List<String> stops, int from) {
        int best = -1;
        for (String st : stops) {
            int at = text.indexOf(st, from);
            if (at >= 0 && (best < 0 || at < best)) best = at;
        }
        return best;
    }
}
