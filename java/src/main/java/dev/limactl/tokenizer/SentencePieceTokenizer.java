package dev.limactl.tokenizer;

import ai.djl.sentencepiece.SpProcessor;
import ai.djl.sentencepiece.SpTokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

/**
 * A SentencePiece {@code tokenizer.model} (LLaMA's), through DJL's binding of the SentencePiece C++
 * library itself, so ids are exactly the library's.
 */
public final class SentencePieceTokenizer implements Tokenizer {
    private final SpTokenizer sp;
    private final SpProcessor proc;
    private final int vocab;

    private SentencePieceTokenizer(SpTokenizer sp, int vocab) {
        this.sp = sp;
        this.proc = sp.getProcessor();
        this.vocab = vocab;
    }

    public static SentencePieceTokenizer open(Path file) {
        NativeTokenizers.prepare();
        try {
            return fromBytes(Files.readAllBytes(file), file.toString());
        } catch (IOException e) {
            throw new TokenizerException("cannot read tokenizer " + file + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
    }

    public static SentencePieceTokenizer fromBytes(byte[] model, String name) {
        try {
            int pieces = SpModel.parse(model).pieces().size();  // DJL does not expose the vocabulary size
            if (pieces == 0) throw new IllegalArgumentException("no pieces");
            return new SentencePieceTokenizer(new SpTokenizer(model), pieces);
        } catch (RuntimeException e) {
            throw new TokenizerException(name + " is not a SentencePiece model: " + e.getMessage(), e);
        }
    }

    @Override
    public int[] encode(String text) {
        return text.isEmpty() ? new int[0] : proc.encode(text);
    }

    /**
     * Decoding as SentencePiece does it (pieces joined, "▁" as space, byte-fallback pieces
     * {@code <0xNN>} as raw UTF-8 bytes, BOS/EOS dropped, the dummy-prefix space removed), done here
     * because DJL's decode returns characters outside the BMP (emoji) mangled by JNI's modified UTF-8.
     */
    @Override
    public String decode(int[] ids) {
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        int bos = bosId(), eos = eosId();
        for (int id : ids) {
            if (id == bos || id == eos) continue;
            String p = piece(id);
            if (p.length() == 6 && p.startsWith("<0x") && p.endsWith(">")) {
                out.write(Integer.parseInt(p.substring(3, 5), 16));
            } else {
                out.writeBytes((p.equals("<unk>") ? " \u2047 " : p.replace('\u2581', ' ')).getBytes(java.nio.charset.StandardCharsets.UTF_8));
            }
        }
        String s = out.toString(java.nio.charset.StandardCharsets.UTF_8);
        return s.startsWith(" ") ? s.substring(1) : s;
    }

    @Override
    public List<String> pieces(String text) {
        return text.isEmpty() ? List.of() : Arrays.asList(proc.tokenize(text));
    }

    @Override
    public String piece(int id) {
        return proc.getToken(id);
    }

    @Override
    public int vocabSize() {
        return vocab;
    }

    @Override
    public int bosId() {
        return proc.getId("<s>");
    }

    @Override
    public int eosId() {
        return proc.getId("</s>");
    }

    @Override
    public void close() {
        sp.close();
    }
}
