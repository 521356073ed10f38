package dev.limactl.train;

import dev.limactl.chat.ChatFormat;
import dev.limactl.data.Example;
import java.util.ArrayList;
import java.util.List;

/**
 * The training examples in the chat format, trimmed to data.max_tokens: those left with no response
 * token are dropped (their ids kept for the warning), the trimmed ones counted.
 */
record TrainingData(List<ChatFormat.Encoded> examples, int trimmedExamples, long trimmedTokens, int dropped,
                    List<String> droppedIds) {
    static TrainingData encode(List<Example> examples, ChatFormat format) {
        List<ChatFormat.Encoded> train = new ArrayList<>();
        List<String> droppedIds = new ArrayList<>();
        int trimmed = 0, dropped = 0;
        long trimmedTokens = 0;
        for (Example e : examples) {
            ChatFormat.Encoded enc = format.encode(e.turns());
            if (enc.trimmed() > 0) {
                trimmed++;
                trimmedTokens += enc.trimmed();
            }
            if (enc.targets() == 0) {
                dropped++;
                if (droppedIds.size() < 5) droppedIds.add(e.id());
                continue;
            }
            train.add(enc);
        }
        return new TrainingData(train, trimmed, trimmedTokens, dropped, droppedIds);
    }

    /** The examples of optimiser step s of an epoch, in the epoch's order. */
    List<ChatFormat.Encoded> step(int[] order, int s, int batchSize) {
        List<ChatFormat.Encoded> step = new ArrayList<>();
        for (int i = s * batchSize; i < Math.min(examples.size(), (s + 1) * batchSize); i++) step.add(examples.get(order[i]));
        return step;
    }
}
