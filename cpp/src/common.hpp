// Internal helpers shared by every liblima source: the error type that api.cpp turns into a status
// code + thread-local message, and string formatting for those messages.
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

#include "lima/lima.h"

namespace lima {

struct Error : std::runtime_error {
    int code;
    Error(int c, const std::string &msg) : std::runtime_error(msg), code(c) {}
};

template <typename... Args>
std::string cat(const Args &...args) {
    std::ostringstream os;
    (os << ... << args);
    return os.str();
}

template <typename... Args>
[[noreturn]] void fail(int code, const Args &...args) {
    throw Error(code, cat(args...));
}

#define LIMA_REQUIRE(cond, code, ...)            \
    do {                                         \
        if (!(cond)) ::lima::fail(code, __VA_ARGS__); \
    } while (0)

}  // namespace lima
