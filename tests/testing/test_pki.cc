#include "tests/testing/test_pki.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/testing/process.h"

namespace eventbus::testing {

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read \"", path, "\""));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status TestPki::RunOpenssl(const std::vector<std::string>& args) {
  ProcessOptions options;
  options.argv.push_back(kOpensslBinary);
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.log_path = absl::StrCat(dir_path_, "/openssl.log");
  auto process = Process::Start(options);
  if (!process.ok()) return process.status();
  auto exit = (*process)->Wait(absl::Seconds(30));
  if (!exit.ok()) return exit.status();
  if (!exit->Success()) {
    return absl::InternalError(absl::StrCat("openssl ", absl::StrJoin(args, " "), ": ",
                                            exit->ToString(), ": ", (*process)->ReadLog()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TestPki>> TestPki::Create(const std::string& ca_name) {
  std::unique_ptr<TestPki> pki(new TestPki("pki"));
  pki->ca_cert_path_ = pki->dir_path_ + "/ca.crt";
  pki->ca_key_path_ = pki->dir_path_ + "/ca.key";
  absl::Status made = pki->RunOpenssl(
      {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-days", "2", "-subj", absl::StrCat("/CN=", ca_name), "-keyout", pki->ca_key_path_, "-out",
       pki->ca_cert_path_, "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
       "keyUsage=critical,keyCertSign,cRLSign"});
  if (!made.ok()) return made;
  auto pem = ReadWholeFile(pki->ca_cert_path_);
  if (!pem.ok()) return pem.status();
  pki->ca_cert_pem_ = *std::move(pem);
  return pki;
}

absl::StatusOr<CertFiles> TestPki::Issue(const std::string& file_stem,
                                         const std::string& common_name,
                                         const std::vector<std::string>& sans, CertUsage usage) {
  const std::string stem = absl::StrCat(dir_path_, "/", file_stem);
  CertFiles files{stem + ".crt", stem + ".key", "", ""};
  absl::Status status = RunOpenssl(
      {"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj",
       absl::StrCat("/CN=", common_name), "-keyout", files.key_path, "-out", stem + ".csr"});
  if (!status.ok()) return status;
  {
    std::ofstream ext(stem + ".ext");
    if (!sans.empty()) ext << "subjectAltName=" << absl::StrJoin(sans, ",") << "\n";
    ext << "extendedKeyUsage=" << (usage == CertUsage::kServer ? "serverAuth" : "clientAuth")
        << "\n";
    if (!ext) return absl::InternalError(absl::StrCat("cannot write \"", stem, ".ext\""));
  }
  status = RunOpenssl({"x509", "-req", "-in", stem + ".csr", "-CA", ca_cert_path_, "-CAkey",
                       ca_key_path_, "-set_serial", absl::StrCat(++serial_), "-days", "2",
                       "-extfile", stem + ".ext", "-out", files.cert_path});
  if (!status.ok()) return status;
  auto cert = ReadWholeFile(files.cert_path);
  if (!cert.ok()) return cert.status();
  auto key = ReadWholeFile(files.key_path);
  if (!key.ok()) return key.status();
  files.cert_pem = *std::move(cert);
  files.key_pem = *std::move(key);
  return files;
}

absl::StatusOr<CertFiles> TestPki::IssueLocalhostServer(const std::string& file_stem) {
  return Issue(file_stem, "localhost", {"DNS:localhost", "IP:127.0.0.1", "IP:::1"},
               CertUsage::kServer);
}

}  // namespace eventbus::testing
