package dev.limactl.tokenizer;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * Text to token ids and back, as the model's own tokenizer does it. Encoding adds no BOS/EOS; the
 * chat format decides where those go.
 */
public interface Tokenizer extends AutoCloseable {
    int[] encode(String text);

    String decode(int[] ids);

    /** The pieces of a text (e.g. "▁Hello"), one per id of {@link #encode}. */
    List<String> pieces(String text);

    String piece(int id);

    int vocabSize();

    int bosId();

    int eosId();

    /** The id of a text that is exactly one token (a special token such as "<|eot_id|>" included), else -1. */
    default int idOf(String token) {
        int[] ids = encode(token);
        return ids.length == 1 ? ids[0] : -1;
    }

    @Override
    void close();

    /**
     * Opens a tokenizer file or a model directory: {@code tokenizer.model} (SentencePiece) or
     * {@code tokenizer.json} (Hugging Face); a directory is searched for those names in that order.
     */
    static Tokenizer open(Path path) {
        Path p = file(path);
        return p.getFileName().toString().endsWith(".json") ? HfTokenizer.open(p) : SentencePieceTokenizer.open(p);
    }

    /** The tokenizer file {@link #open} reads for a file or a model directory. */
    static Path file(Path path) {
        Path p = path;
        if (Files.isDirectory(p)) {
            if (Files.exists(p.resolve("tokenizer.model"))) p = p.resolve("tokenizer.model");
            else if (Files.exists(p.resolve("tokenizer.json"))) p = p.resolve("tokenizer.json");
            else throw new TokenizerException("directory " + path + " has neither tokenizer.model nor tokenizer.json");
        }
        if (!Files.isRegularFile(p)) throw new TokenizerException("tokenizer file " + p + " does not exist");
        return p;
    }

    /** The Hugging Face tokenizer files a model directory may hold, kept together in every checkpoint. */
    java.util.List<String> FILES = java.util.List.of("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "added_tokens.json");
}
