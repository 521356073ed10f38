package dev.limactl.generate;

import dev.limactl.chat.ChatFormat;
import dev.limactl.data.Turn;
import dev.limactl.engine.Decoder;
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
public final class Generator {
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

    /** finish: "eot" (the model ended its turn), "eos", "stop" (a stop string), "length" (maxNewTokens or the context). */
    public record Answer(String text, int promptTokens, int generatedTokens, String finish) {}

    private final Model model;
    private final Tokenizer tokenizer;
    private final ChatFormat format;
    private final int contextLength;

    public Generator(Model model, Tokenizer tokenizer, int eotId, int contextLength) {
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

    /** Decodes all requests together (one batch row each). */
    public List<Answer> generate(List<Request> requests, Listener listener) {
        int n = requests.size();
        int[][] prompts = new int[n][];
        long[] seeds = new long[n];
        int longest = 0, budget = 0;
        for (int i = 0; i < n; i++) {
            prompts[i] = format.prompt(requests.get(i).conversation());
            if (prompts[i].length >= contextLength) {
                throw new IllegalArgumentException("prompt " + i + " has " + prompts[i].length + " tokens; the context holds " + contextLength);
            }
            seeds[i] = requests.get(i).seed();
            longest = Math.max(longest, prompts[i].length);
            budget = Math.max(budget, requests.get(i).maxNewTokens());
        }
        int maxLen = Math.min(contextLength, longest + budget + 1);
        List<List<Integer>> out = new ArrayList<>();
        String[] text = new String[n], emitted = new String[n];
        String[] finish = new String[n];
        boolean[] active = new boolean[n];
        for (int i = 0; i < n; i++) {
            out.add(new ArrayList<>());
            text[i] = "";
            emitted[i] = "";
            active[i] = true;
        }
        try (Decoder d = new Decoder(model, n, maxLen)) {
            d.start(prompts, seeds);
            Sampling s = requests.get(0).sampling();
            for (Request q : requests) {
                if (!q.sampling().equals(s)) throw new IllegalArgumentException("a batch shares one sampling setting");
            }
            int remaining = n;
            while (remaining > 0) {
                int[] tok = d.step(s, active);
                for (int i = 0; i < n; i++) {
                    if (!active[i]) continue;
                    Request q = requests.get(i);
                    int t = tok[i];
                    String reason = null;
                    if (t == format.eotId()) reason = "eot";
                    else if (t == tokenizer.eosId()) reason = "eos";
                    else {
                        out.get(i).add(t);
                        String full = tokenizer.decode(out.get(i).stream().mapToInt(Integer::intValue).toArray());
                        for (String st : q.stop()) {
                            int at = full.indexOf(st);
                            if (at >= 0) {
                                full = full.substring(0, at);
                                reason = "stop";
                                break;
                            }
                        }
                        // A character split over byte-fallback tokens decodes to U+FFFD until its last byte
                        // arrives: hold that tail back so streamed pieces concatenate to the final text.
                        String stable = full;
                        while (stable.endsWith("\uFFFD")) stable = stable.substring(0, stable.length() - 1);
                        if (stable.length() > emitted[i].length() && stable.startsWith(emitted[i])) {
                            listener.onText(i, stable.substring(emitted[i].length()));
                            emitted[i] = stable;
                        }
                        text[i] = full;
                        if (reason == null && (out.get(i).size() >= q.maxNewTokens() || prompts[i].length + out.get(i).size() + 1 >= maxLen)) {
                            reason = "length";
                        }
                    }
                    if (reason != null) {
                        finish[i] = reason;
                        active[i] = false;
                        remaining--;
                    }
                }
            }
        }
        List<Answer> answers = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            if (text[i].length() > emitted[i].length() && text[i].startsWith(emitted[i])) {
                listener.onText(i, text[i].substring(emitted[i].length()));  // an unresolved tail, as it is
            }
        }
        for (int i = 0; i < n; i++) answers.add(new Answer(text[i], prompts[i].length, out.get(i).size(), finish[i]));
        return answers;
    }
}
