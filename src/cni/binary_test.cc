// The membrane-cni binary as a runtime and a person run it: environment and
// stdin in, stdout and exit code out (the commands' logic is plugin_test's).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "membrane/result.h"

namespace {

std::string binary() {
  const char* dir = std::getenv("MEMBRANE_BUILD_DIR");
  MB_CHECK(dir != nullptr);
  return std::string(dir) + "/bin/membrane-cni";
}

struct Run {
  int exit_code = -1;
  std::string out;
};

// Runs `env -i <vars> membrane-cni <args> < stdin_file` (a clean
// environment, as a runtime gives) and captures stdout.
Run run(const std::string& vars, const std::string& args, const std::string& stdin_text) {
  char tmpl[] = "/tmp/membrane-cni-stdin-XXXXXX";
  int fd = ::mkstemp(tmpl);
  MB_CHECK(fd >= 0);
  MB_CHECK(::write(fd, stdin_text.data(), stdin_text.size()) == static_cast<ssize_t>(stdin_text.size()));
  ::close(fd);
  std::string cmd = "env -i " + vars + " " + binary() + " " + args + " < " + tmpl + " 2>/dev/null";
  Run r;
  FILE* p = ::popen(cmd.c_str(), "r");
  MB_CHECK(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = ::pclose(p);
  ::unlink(tmpl);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(CniBinary, VersionFlagForPeople) {
  auto r = run("", "--version", "");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "membrane-cni 0.1.0\nCNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n");
}

TEST(CniBinary, HelpWithoutCniCommand) {
  for (const char* args : {"", "--help", "-h"}) {
    auto r = run("", args, "");
    EXPECT_EQ(r.exit_code, 0) << args;
    EXPECT_TRUE(r.out.starts_with("membrane-cni — the CNI plugin of membrane")) << r.out;
    EXPECT_NE(r.out.find("\nCNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"), std::string::npos);
    EXPECT_NE(r.out.find("MEMBRANE_LABELS=key:value,key:value"), std::string::npos);
  }
  EXPECT_EQ(run("", "--frobnicate", "").exit_code, 2);
}

TEST(CniBinary, VersionCommand) {
  auto r = run("CNI_COMMAND=VERSION", "", R"({"cniVersion": "1.0.0"})");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "{\n  \"cniVersion\": \"1.0.0\",\n  \"supportedVersions\": [\n    \"0.3.0\",\n    \"0.3.1\",\n"
                   "    \"0.4.0\",\n    \"1.0.0\",\n    \"1.1.0\"\n  ]\n}\n");
}

TEST(CniBinary, ErrorsAreJsonOnStdoutWithExit1) {
  auto r = run("CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni", "",
               R"({"cniVersion": "0.4.0", "name": "membrane", "type": "membrane-cni"})");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "{\n  \"cniVersion\": \"0.4.0\",\n  \"code\": 4,\n  \"msg\": \"CNI_NETNS is not set (required "
                   "for ADD)\"\n}\n");
  // Arguments are ignored when a runtime runs it.
  auto bad = run("CNI_COMMAND=FROB", "--help", "{}");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.out, "{\n  \"cniVersion\": \"1.1.0\",\n  \"code\": 4,\n  \"msg\": \"CNI_COMMAND=\\\"FROB\\\": unknown "
                     "command (ADD, DEL, CHECK, VERSION, GC, STATUS)\"\n}\n");
}

}  // namespace
