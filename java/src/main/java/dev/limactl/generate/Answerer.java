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
    public record Answer(String text, int promptTokens, int generatedTokens, String finish, int[] tokens) {
        /** tokens: the generated token ids (EOT or EOS that ended the answer not included). */
        public Answer(String text, int promptTokens, int generatedTokens, String finish) {
            this(text, promptTokens, generatedTokens, finish, new int[0]);
        }

        // the token ids compared by content (a record compares arrays by reference)
        @Override
        public boolean equals(Object o) {
            return o instanceof Answer a && text.equals(a.text) && promptTokens == a.promptTokens && generatedTokens == a.generatedTokens
                    && finish.equals(a.finish) && java.util.Arrays.equals(tokens, a.tokens);
        }

        @Override
        public int hashCode() {
            return java.util.Objects.hash(text, promptTokens, generatedTokens, finish) * 31 + java.util.Arrays.hashCode(tokens);
        }

        @Override
        public String toString() {
            return "Answer[text=" + text + ", promptTokens=" + promptTokens + ", generatedTokens=" + generatedTokens + ", finish=" + finish
                    + ", tokens=" + java.util.Arrays.toString(tokens) + "]";
        }
    }

    /**
     * Log-probabilities of a token sequence under the model (eval mode): logprob[j] of ids[j] after
     * ids[0..j) for j >= 1 (logprob[0] is NaN: nothing precedes it), and at each position j >= 1 the k
     * most likely tokens there with theirs, most likely first.
     */
    public record Scores(float[] logprob, int[][] topIds, float[][] topLogprob) {}

    private final Object scoring = new Object();

    /** Scores ids (at most the context); k in [0, 20] top tokens per position. */
    public Scores score(int[] ids, int k) {
        if (ids.length == 0 || ids.length > contextLength) {
            throw new IllegalArgumentException("cannot score " + ids.length + " tokens: the context holds " + contextLength);
        }
        int v = model.config().vocabSize(), n = ids.length;
        for (int id : ids) if (id < 0 || id >= v) throw new IllegalArgumentException("token id " + id + " is outside the vocabulary of " + v);
        float[] logits;
        synchronized (scoring) {  // the model's activation buffers serve one scoring pass at a time (decoding has its own)
            try (dev.limactl.engine.Batch b = new dev.limactl.engine.Batch(1, n).set(ids, new byte[n], null)) {
                logits = model.logits(b);
            }
        }
        float[] lp = new float[n];
        int[][] top = new int[n][];
        float[][] topLp = new float[n][];
        lp[0] = Float.NaN;
        top[0] = new int[0];
        topLp[0] = new float[0];
        for (int j = 1; j < n; j++) {
            int off = (j - 1) * v;
            double max = Double.NEGATIVE_INFINITY, sum = 0;
            for (int t = 0; t < v; t++) max = Math.max(max, logits[off + t]);
            for (int t = 0; t < v; t++) sum += Math.exp(logits[off + t] - max);
            double logZ = max + Math.log(sum);
            lp[j] = (float) (logits[off + ids[j]] - logZ);
            top[j] = topK(logits, off, v, Math.min(k, v));
            topLp[j] = new float[top[j].length];
            for (int t = 0; t < top[j].length; t++) topLp[j][t] = (float) (logits[off + top[j][t]] - logZ);
        }
        return new Scores(lp, top, topLp);
    }

    /** The k largest of x[off, off + v), largest first, the lower id first among equals: one pass with k kept (k <= 20). */
    private static int[] topK(float[] x, int off, int v, int k) {
        int[] best = new int[k];
        if (k == 0) return best;
        int n = 0;
        for (int t = 0; t < v; t++) {
            float val = x[off + t];
            if (n == k && !(val > x[off + best[k - 1]])) continue;
            int at = n < k ? n++ : k - 1;
            while (at > 0 && val > x[off + best[at - 1]]) {
                best[at] = best[at - 1];
                at--;
            }
            best[at] = t;
        }
        return best;
    }

    /** A token as OpenAI's logprobs show it: its piece, SentencePiece's word marker as a space (byte pieces as {@code <0xNN>}). */
    public String tokenText(int id) {
        return tokenizer.piece(id).replace('\u2581', ' ');
    }

    /** A raw prompt's tokens as Hugging Face tokenizers give them by default: BOS, then the text. */
    public int[] encodeRaw(String text) {
        int[] t = tokenizer.encode(text);
        int[] out = new int[t.length + 1];
        out[0] = tokenizer.bosId();
        System.arraycopy(t, 0, out, 1, t.length);
        return out;
    }

    public String decode(int[] ids) {
        return tokenizer.decode(ids);
    }

    public int contextLength() {
        return contextLength;
    }

    public int vocabSize() {
        return model.config().vocabSize();
    }

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
    public record Prepared(Request request, int[] prompt, java.util.concurrent.atomic.AtomicBoolean cancelled, boolean continuation) {
        public Prepared(Request request, int[] prompt) {
            this(request, prompt, new java.util.concurrent.atomic.AtomicBoolean(), false);
        }

        /** A raw prompt continued as text (/v1/completions): the answer's text keeps the space of a word boundary at its start. */
        public static Prepared continuing(Request request, int[] prompt) {
            return new Prepared(request, prompt, new java.util.concurrent.atomic.AtomicBoolean(), true);
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
            int[] p = prompts[i];
            out[i] = prepared.get(i).continuation() && p.length > 0 ? new TextStream(tokenizer, new int[] {p[p.length - 1]})
                    : new TextStream(tokenizer);
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
        for (int i = 0; i < n; i++) answers.add(new Answer(text[i], prompts[i].length, out[i].tokens(), finish[i], out[i].ids()));
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
