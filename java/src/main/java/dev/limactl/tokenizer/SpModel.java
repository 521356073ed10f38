package dev.limactl.tokenizer;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * The parts of a SentencePiece {@code ModelProto} that a Hugging Face {@code tokenizer.json} needs:
 * the pieces (text, score, type), the trainer's model type, unk id and byte fallback, and the
 * normalizer (its precompiled character map, dummy prefix, whitespace handling). Read by walking the
 * protobuf wire format (tags, varints, lengths) against sentencepiece_model.proto's field numbers:
 * DJL's binding exposes none of this, and the format is small and fixed, so no generated protobuf
 * classes are pulled in for it.
 */
public record SpModel(List<Piece> pieces, int modelType, int unkId, boolean byteFallback, byte[] charsmap, boolean addDummyPrefix,
                      boolean removeExtraWhitespaces) {
    /** SentencePiece.Type: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6. */
    public record Piece(String text, float score, int type) {}

    /** TrainerSpec.model_type of a BPE model (LLaMA's); 1 is Unigram. */
    public static final int BPE = 2;

    public static SpModel parse(byte[] b) {
        List<Piece> pieces = new ArrayList<>();
        int[] trainer = {1, 0, 0};  // model_type (3), unk_id (40), byte_fallback (35)
        Object[] norm = {new byte[0], Boolean.TRUE, Boolean.TRUE};  // precompiled_charsmap (2), add_dummy_prefix (3), remove_extra_whitespaces (4)
        new Reader(b, 0, b.length).fields((field, wire, r, v) -> {
            if (field == 1 && wire == 2) {  // ModelProto.pieces
                String[] text = {""};
                float[] score = {0};
                int[] type = {1};
                r.fields((f, w, rr, vv) -> {
                    if (f == 1 && w == 2) text[0] = rr.string();
                    else if (f == 2 && w == 5) score[0] = Float.intBitsToFloat((int) vv);
                    else if (f == 3 && w == 0) type[0] = (int) vv;
                });
                pieces.add(new Piece(text[0], score[0], type[0]));
            } else if (field == 2 && wire == 2) {  // ModelProto.trainer_spec
                r.fields((f, w, rr, vv) -> {
                    if (f == 3 && w == 0) trainer[0] = (int) vv;
                    else if (f == 40 && w == 0) trainer[1] = (int) vv;
                    else if (f == 35 && w == 0) trainer[2] = (int) vv;
                });
            } else if (field == 3 && wire == 2) {  // ModelProto.normalizer_spec
                r.fields((f, w, rr, vv) -> {
                    if (f == 2 && w == 2) norm[0] = rr.bytes();
                    else if (f == 3 && w == 0) norm[1] = vv != 0;
                    else if (f == 4 && w == 0) norm[2] = vv != 0;
                });
            }
        });
        if (pieces.isEmpty()) throw new IllegalArgumentException("no pieces");
        return new SpModel(List.copyOf(pieces), trainer[0], trainer[1], trainer[2] != 0, (byte[]) norm[0], (Boolean) norm[1], (Boolean) norm[2]);
    }

    private interface Field {
        /** A field: its number, wire type, a reader over its bytes (wire type 2) and its value (varint / fixed). */
        void accept(int field, int wire, Reader content, long value);
    }

    private static final class Reader {
        final byte[] b;
        int pos;
        final int end;

        Reader(byte[] b, int pos, int end) {
            this.b = b;
            this.pos = pos;
            this.end = end;
        }

        long varint() {
            long v = 0;
            for (int shift = 0; ; shift += 7) {
                if (pos >= end || shift > 63) throw new IllegalArgumentException("truncated protobuf varint");
                int x = b[pos++] & 0xff;
                v |= (long) (x & 0x7f) << shift;
                if (x < 0x80) return v;
            }
        }

        String string() {
            return new String(b, pos, end - pos, StandardCharsets.UTF_8);
        }

        byte[] bytes() {
            return java.util.Arrays.copyOfRange(b, pos, end);
        }

        void fields(Field f) {
            while (pos < end) {
                long tag = varint();
                int field = (int) (tag >>> 3), wire = (int) (tag & 7);
                switch (wire) {
                    case 0 -> f.accept(field, wire, null, varint());
                    case 1 -> f.accept(field, wire, null, fixed(8, field));
                    case 5 -> f.accept(field, wire, null, fixed(4, field));
                    case 2 -> {
                        long len = varint();
                        if (len < 0 || len > end - pos) throw new IllegalArgumentException("truncated protobuf field " + field);
                        Reader sub = new Reader(b, pos, pos + (int) len);
                        pos += (int) len;
                        f.accept(field, wire, sub, 0);
                    }
                    default -> throw new IllegalArgumentException("unexpected protobuf wire type " + wire);
                }
            }
        }

        /** A little-endian fixed-width value of n bytes. */
        private long fixed(int n, int field) {
            if (end - pos < n) throw new IllegalArgumentException("truncated protobuf field " + field);
            long v = 0;
            for (int i = 0; i < n; i++) v |= (long) (b[pos + i] & 0xff) << (8 * i);
            pos += n;
            return v;
        }
    }
}
