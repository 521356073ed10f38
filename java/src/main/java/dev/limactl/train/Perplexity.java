package dev.limactl.train;

import dev.limactl.chat.ChatFormat;
import dev.limactl.data.Example;
import dev.limactl.engine.Batch;
import dev.limactl.engine.Model;
import java.util.ArrayList;
import java.util.List;

/** Mean negative log-likelihood of response tokens (the loss mask of the chat format), and its perplexity. */
public record Perplexity(double meanNll, long tokens, int examples) {
    public double perplexity() {
        return Math.exp(meanNll);
    }

    public static Perplexity of(Model model, ChatFormat format, List<Example> examples, int microBatchTokens) {
        List<ChatFormat.Encoded> enc = new ArrayList<>();
        for (Example e : examples) enc.add(format.encode(e.turns()));
        double nll = 0;
        long n = 0;
        for (int from = 0; from < enc.size(); from += 16) {
            for (MicroBatch mb : MicroBatch.pack(enc.subList(from, Math.min(enc.size(), from + 16)), microBatchTokens)) {
                try (Batch b = new Batch(mb.rows(), mb.seqLen()).set(mb.tokens(), mb.mask(), mb.segments())) {
                    float[] lp = model.tokenLogprobs(b);
                    for (int i = 0; i < lp.length; i++) {
                        boolean target = mb.mask()[i] == 1 && i % mb.seqLen() > 0 && mb.segments()[i - 1] == mb.segments()[i];
                        if (target) {
                            nll -= lp[i];
                            n++;
                        }
                    }
                }
            }
        }
        return new Perplexity(n == 0 ? Double.NaN : nll / n, n, examples.size());
    }
}
