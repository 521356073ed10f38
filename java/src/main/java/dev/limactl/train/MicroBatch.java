package dev.limactl.train;

import dev.limactl.chat.ChatFormat;
import java.util.ArrayList;
import java.util.List;

/**
 * Packed micro-batch contents: rows x seqLen tokens, several examples per row back to back (segment
 * ids 1, 2, ... per row; 0 = padding), so short LIMA examples waste no compute on padding.
 */
public record MicroBatch(int rows, int seqLen, int[] tokens, byte[] mask, int[] segments, long targets) {

    /**
     * Packs the examples of one optimiser step: rows as long as the longest example, filled first-fit
     * in the given order, then grouped into micro-batches of about microBatchTokens tokens.
     */
    public static List<MicroBatch> pack(List<ChatFormat.Encoded> examples, int microBatchTokens) {
        int seqLen = examples.stream().mapToInt(ChatFormat.Encoded::length).max().orElse(1);
        List<List<ChatFormat.Encoded>> rows = new ArrayList<>();
        List<Integer> used = new ArrayList<>();
        for (ChatFormat.Encoded e : examples) {
            int r = 0;
            while (r < rows.size() && used.get(r) + e.length() > seqLen) r++;
            if (r == rows.size()) {
                rows.add(new ArrayList<>());
                used.add(0);
            }
            rows.get(r).add(e);
            used.set(r, used.get(r) + e.length());
        }
        int perBatch = Math.max(1, microBatchTokens / seqLen);
        List<MicroBatch> out = new ArrayList<>();
        for (int from = 0; from < rows.size(); from += perBatch) {
            List<List<ChatFormat.Encoded>> group = rows.subList(from, Math.min(rows.size(), from + perBatch));
            int n = group.size() * seqLen;
            int[] tok = new int[n], seg = new int[n];
            byte[] mask = new byte[n];
            long targets = 0;
            for (int r = 0; r < group.size(); r++) {
                int pos = r * seqLen, id = 1;
                for (ChatFormat.Encoded e : group.get(r)) {
                    System.arraycopy(e.tokens(), 0, tok, pos, e.length());
                    System.arraycopy(e.mask(), 0, mask, pos, e.length());
                    java.util.Arrays.fill(seg, pos, pos + e.length(), id++);
                    targets += e.targets();
                    pos += e.length();
                }
            }
            out.add(new MicroBatch(group.size(), seqLen, tok, mask, seg, targets));
        }
        return out;
    }
}
