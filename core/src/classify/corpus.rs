//! Table-driven tests of the default rules over real-world SMTP replies and
//! connection failures (test-only module).
//!
//! Sources: RFC 5321 (reply texts), RFC 3463 (enhanced codes), RFC 7504/7505
//! (null MX), Gmail's SMTP error reference, Microsoft Exchange Online /
//! Outlook.com NDR reference, Yahoo/AOL postmaster error codes, iCloud,
//! Comcast, Postfix, Exim, Sendmail and qmail stock messages, Mimecast,
//! Proofpoint, Barracuda, Rackspace, Amazon SES and Mailgun bounce texts;
//! for the hard cases also Haraka plugins, qmail patches (chkuser, MAIL FROM
//! DNS check), greylisting tools (postgrey, milter-greylist, rspamd,
//! greylistd), Coremail, and the published error pages of Yandex, Mail.ru,
//! QQ Mail, NetEase (163.com), Orange, T-Online, GMX / WEB.DE, Zoho, Cisco
//! and Trend Micro. Each group of rows names its source. Addresses and IPs
//! are replaced by documentation values.
//!
//! A row's input is what an operator would paste (`Failure::from_reply_text`),
//! or `conn:<kind>:<detail>` for a connection failure.
//!
//! Long on purpose: the file is one table of some 400 real-world replies,
//! one per row, checked as a whole (every rule and every reason exercised).

use std::collections::BTreeSet;

use super::*;

const HARD: FailureType = FailureType::Hard;
const SOFT: FailureType = FailureType::Soft;
const IGN: FailureType = FailureType::Ignored;
const IMM: Quarantine = Quarantine::Immediate;
const CNT: Quarantine = Quarantine::Count;
const NOQ: Quarantine = Quarantine::None;
const REC: Scope = Scope::Recipient;
const DOM: Scope = Scope::Domain;
const SND: Scope = Scope::Sender;

use Reason::{
    AccountDisabled, AutoReply, Greylisted, InvalidDomain, MailboxFull, MessageTooLarge,
    RateLimited, Refused, Undefined, Unreachable, UserUnknown,
};

type Row = (&'static str, Reason, FailureType, bool, Quarantine, Scope);

#[rustfmt::skip]
const CORPUS: &[Row] = &[
    // ----- seeds (the product issue) -----
    ("451 4.4.3 Routing server failure", Unreachable, SOFT, true, NOQ, DOM),
    ("451 4.4.3 <user@example.com>: Routing server failure - intermediate server unavailable", Unreachable, SOFT, true, NOQ, DOM),
    ("421 Service not available, closing transmission channel", RateLimited, SOFT, true, NOQ, DOM),
    ("421 4.7.0 Service not available, closing transmission channel", RateLimited, SOFT, true, NOQ, DOM),
    ("550 Requested action not taken: 5.1.1 mailbox unavailable", UserUnknown, HARD, false, IMM, REC),
    ("552 5.2.2 mailbox full", MailboxFull, SOFT, true, CNT, REC),
    ("550 5.4.5 Daily sending quota exceeded", RateLimited, SOFT, true, NOQ, DOM),
    ("452 4.5.3 too many recipients", RateLimited, SOFT, true, NOQ, DOM),

    // ----- RFC 5321 reply texts -----
    ("450 Requested mail action not taken: mailbox unavailable", Undefined, SOFT, true, NOQ, REC),
    ("451 Requested action aborted: local error in processing", Undefined, SOFT, true, NOQ, REC),
    ("452 Requested action not taken: insufficient system storage", Undefined, SOFT, true, NOQ, REC),
    ("500 Syntax error, command unrecognized", Undefined, SOFT, false, NOQ, SND),
    ("501 Syntax error in parameters or arguments", Undefined, SOFT, false, NOQ, SND),
    ("503 Bad sequence of commands", Undefined, SOFT, false, NOQ, SND),
    ("504 Command parameter not implemented", Undefined, SOFT, false, NOQ, SND),
    ("550 Requested action not taken: mailbox unavailable", UserUnknown, HARD, false, IMM, REC),
    ("551 User not local; please try <forward@example.net>", UserUnknown, HARD, false, IMM, REC),
    ("552 Requested mail action aborted: exceeded storage allocation", MailboxFull, SOFT, true, CNT, REC),
    ("553 Requested action not taken: mailbox name not allowed", UserUnknown, HARD, false, IMM, REC),
    ("554 Transaction failed", Unreachable, SOFT, true, NOQ, DOM),
    ("554 No SMTP service here", Unreachable, SOFT, true, NOQ, DOM),

    // ----- RFC 3463 enhanced status codes (with their RFC descriptions) -----
    ("550 5.1.1 Bad destination mailbox address", UserUnknown, HARD, false, IMM, REC),
    ("550 5.1.2 Bad destination system address", InvalidDomain, SOFT, true, CNT, REC),
    ("501 5.1.3 Bad destination mailbox address syntax", UserUnknown, HARD, false, IMM, REC),
    ("551 5.1.6 Destination mailbox has moved, no forwarding address", UserUnknown, HARD, false, IMM, REC),
    ("550 5.2.1 Mailbox disabled, not accepting messages", AccountDisabled, SOFT, false, CNT, REC),
    ("450 4.2.1 Mailbox disabled, not accepting messages", AccountDisabled, SOFT, true, CNT, REC),
    ("452 4.2.2 Mailbox full", MailboxFull, SOFT, true, CNT, REC),
    ("552 5.2.3 Message length exceeds administrative limit", MessageTooLarge, HARD, false, NOQ, SND),
    ("554 5.3.4 Message too big for system", MessageTooLarge, HARD, false, NOQ, SND),
    ("451 4.4.1 No answer from host", Unreachable, SOFT, true, NOQ, DOM),
    ("451 4.4.2 Bad connection", Unreachable, SOFT, true, NOQ, DOM),
    ("550 5.4.4 Unable to route", InvalidDomain, SOFT, true, CNT, REC),
    ("554 5.4.6 Routing loop detected", Unreachable, SOFT, true, NOQ, DOM),
    ("451 4.4.7 Delivery time expired", Unreachable, SOFT, true, NOQ, DOM),
    ("554 5.6.1 Media not supported", Undefined, HARD, false, NOQ, SND),
    ("550 5.7.1 Delivery not authorized, message refused", Refused, HARD, false, NOQ, SND),
    ("553 5.1.7 Bad sender's mailbox address syntax", Refused, HARD, false, NOQ, SND),
    ("553 5.1.8 Bad sender's system address", Refused, HARD, false, NOQ, SND),
    ("500 5.5.1 Invalid command", Undefined, SOFT, false, NOQ, SND),
    ("452 4.3.1 Mail system full", Undefined, SOFT, true, NOQ, REC),

    // ----- RFC 7504 / RFC 7505 null MX -----
    ("556 5.1.10 Recipient address has null MX", InvalidDomain, HARD, false, IMM, REC),
    ("556 5.1.10 Domain does not accept mail", InvalidDomain, HARD, false, IMM, REC),
    ("550 5.7.27 Sender address has null MX", Refused, HARD, false, NOQ, SND),

    // ----- Gmail SMTP error reference -----
    ("550-5.1.1 The email account that you tried to reach does not exist. Please try\n550-5.1.1 double-checking the recipient's email address for typos or\n550-5.1.1 unnecessary spaces. For more information, go to\n550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a640c23a62f3a-a9e4b2f1b1bsi123456.45 - gsmtp", UserUnknown, HARD, false, IMM, REC),
    ("550 5.2.1 The email account that you tried to reach is disabled. https://support.google.com/mail/?p=DisabledUser - gsmtp", AccountDisabled, SOFT, false, CNT, REC),
    ("452 4.2.2 The email account that you tried to reach is over quota. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaTemp - gsmtp", MailboxFull, SOFT, true, CNT, REC),
    ("552 5.2.2 The recipient's inbox is out of storage space and inactive. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaPerm - gsmtp", MailboxFull, SOFT, true, CNT, REC),
    ("552-5.2.3 Your message exceeded Google's message size limits. Please visit https://support.google.com/mail/?p=MaxSizeError to view our size guidelines. - gsmtp", MessageTooLarge, HARD, false, NOQ, SND),
    ("553 5.1.2 We weren't able to find the recipient domain. Please check for any spelling errors, and make sure you didn't enter any spaces, periods, or other punctuation after the recipient's email address.", InvalidDomain, SOFT, true, CNT, REC),
    ("553 5.1.3 The recipient address <bob@@example.com> is not a valid RFC-5321 address. - gsmtp", UserUnknown, HARD, false, IMM, REC),
    ("450-4.2.1 The user you are trying to contact is receiving mail at a rate that\n450-4.2.1 prevents additional messages from being delivered. Please resend your\n450-4.2.1 message at a later time. If the user is able to receive mail at that\n450 4.2.1 time, your message will be delivered. https://support.google.com/mail/?p=ReceivingRate - gsmtp", RateLimited, SOFT, true, NOQ, DOM),
    ("450 4.2.1 The user you are trying to contact is receiving mail too quickly. Please resend your message at a later time.", RateLimited, SOFT, true, NOQ, DOM),
    ("450 4.2.1 Peak SMTP relay limit exceeded for customer. This is a temporary error.", RateLimited, SOFT, true, NOQ, DOM),
    ("421-4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited.", RateLimited, SOFT, true, NOQ, DOM),
    ("421 4.7.0 Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily blocked.", RateLimited, SOFT, true, NOQ, DOM),
    ("550-5.7.1 Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been blocked.", Refused, HARD, false, NOQ, SND),
    ("550-5.7.1 [192.0.2.1] Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked.", Refused, HARD, false, NOQ, SND),
    ("550-5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM.", Refused, HARD, false, NOQ, SND),
    ("421-4.7.26 This mail has been rate limited because it is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM.", Refused, SOFT, true, NOQ, SND),
    ("550-5.7.25 The IP address sending this message does not have a PTR record setup, or the corresponding forward DNS entry does not point to the sending IP.", Refused, HARD, false, NOQ, SND),
    ("550-5.7.27 The sender's domain has not passed SPF authentication.", Refused, HARD, false, NOQ, SND),
    ("421-4.7.0 This message does not have authentication information or fails to pass authentication checks. To best protect our users from spam, the message has been blocked.", Refused, SOFT, true, NOQ, SND),
    ("550 5.7.1 Unauthenticated email from example.com is not accepted due to domain's DMARC policy.", Refused, HARD, false, NOQ, SND),
    ("552-5.7.0 This message was blocked because its content presents a potential security issue.", Refused, HARD, false, NOQ, SND),
    ("421 4.7.0 TLS required for RCPT domain, closing connection.", Refused, SOFT, true, NOQ, SND),
    ("421 4.7.0 IP not in whitelist for RCPT domain, closing connection.", Refused, SOFT, true, NOQ, SND),
    ("421 4.7.0 Try again later, closing connection. (EHLO) - gsmtp", RateLimited, SOFT, true, NOQ, DOM),
    ("421 4.4.5 Server busy, try again later.", RateLimited, SOFT, true, NOQ, DOM),
    ("451 4.4.2 Timeout - closing connection.", Unreachable, SOFT, true, NOQ, DOM),
    ("550 5.4.5 Daily user sending quota exceeded.", RateLimited, SOFT, true, NOQ, DOM),
    ("550 5.7.1 Email quota exceeded.", RateLimited, SOFT, true, NOQ, DOM),
    ("452 4.5.3 Domain policy size per transaction exceeded, please try this recipient in a separate transaction.", RateLimited, SOFT, true, NOQ, DOM),
    ("550 5.7.0 Mail relay denied.", Refused, HARD, false, NOQ, SND),
    ("550 5.7.0 Mail Sending denied. This error occurs if the sender account is disabled or not registered within your Google Workspace domain.", Refused, HARD, false, NOQ, SND),
    ("535 5.7.8 Username and Password not accepted.", Refused, HARD, false, NOQ, SND),
    ("454 4.5.0 SMTP protocol violation, no commands allowed to pipeline after STARTTLS, see RFC 3207.", Refused, SOFT, true, NOQ, SND),
    ("421 4.3.0 Temporary System Problem. Try again later.", RateLimited, SOFT, true, NOQ, DOM),

    // ----- Microsoft Exchange Online / Outlook.com -----
    ("550 5.7.606 Access denied, banned sending IP [192.0.2.1]. To request removal from this list please visit https://sender.office.com/ and follow the directions.", Refused, HARD, false, NOQ, SND),
    ("550 5.7.649 Access denied, banned sending IP [192.0.2.1].", Refused, HARD, false, NOQ, SND),
    ("550 5.7.515 Access denied, sending domain example.com does not meet the required authentication level. The sender's domain in the 5322.From address doesn't meet the authentication requirements defined for the sender.", Refused, HARD, false, NOQ, SND),
    ("451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation. For e-mail delivery information, see https://postmaster.live.com (S775)", RateLimited, SOFT, true, NOQ, DOM),
    ("451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77719) [BN8NAM12FT034.eop-nam12.prod.protection.outlook.com]", RateLimited, SOFT, true, NOQ, DOM),
    ("550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150).", Refused, HARD, false, NOQ, SND),
    ("550 SC-001 (BAY004-MC1F11) Unfortunately, messages from 192.0.2.1 weren't sent. Please contact your Internet service provider since part of their network is on our block list.", Refused, HARD, false, NOQ, SND),
    ("550 OU-002 (COL004-MC1F11) Unfortunately, messages from 192.0.2.1 weren't sent. Please contact your Internet service provider. You can tell them that Hotmail does not relay dynamically-assigned IP ranges.", Refused, HARD, false, NOQ, SND),
    ("421 RP-001 (BAY004-MC1F11) Unfortunately, some messages from 192.0.2.1 weren't sent. Please try again. We have limits for how many messages can be sent per hour and per day.", RateLimited, SOFT, true, NOQ, DOM),
    ("550 5.5.0 Requested action not taken: mailbox unavailable. [BN8NAM12FT012.eop-nam12.prod.protection.outlook.com]", UserUnknown, HARD, false, IMM, REC),
    ("550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]", UserUnknown, HARD, false, IMM, REC),
    ("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient bob@contoso.com not found by SMTP address lookup", UserUnknown, HARD, false, IMM, REC),
    ("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found", UserUnknown, HARD, false, IMM, REC),
    ("550 5.1.10 RESOLVER.ADR.ExRecipNotFound", UserUnknown, HARD, false, IMM, REC),
    ("554 5.4.4 SMTPSEND.DNS.NonExistentDomain; nonexistent domain", InvalidDomain, SOFT, true, CNT, REC),
    ("550 5.6.11 SMTPSEND.BareLinefeedsAreIllegal; message contains bare linefeeds, which cannot be sent via DATA", Undefined, HARD, false, NOQ, SND),
    ("552 5.2.2 STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded", MailboxFull, SOFT, true, CNT, REC),
    ("432 4.3.2 STOREDRV.Deliver; recipient thread limit exceeded", RateLimited, SOFT, true, NOQ, DOM),
    ("550 5.7.708 Access denied, traffic not accepted from this IP.", Refused, HARD, false, NOQ, SND),
    ("550 5.7.705 Access denied, tenant has exceeded threshold.", Refused, HARD, false, NOQ, SND),
    ("550 5.7.520 Access denied, Your organization does not allow external forwarding.", Refused, HARD, false, NOQ, SND),
    ("550 5.1.8 Access denied, bad outbound sender", Refused, HARD, false, NOQ, SND),
    ("530 5.7.57 Client was not authenticated to send anonymous mail during MAIL FROM", Refused, HARD, false, NOQ, SND),
    ("550 5.7.1 RESOLVER.RST.NotAuthorized; not authorized", Refused, HARD, false, NOQ, SND),
    ("554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked", Refused, HARD, false, NOQ, SND),
    ("550 5.7.350 Remote server returned message detected as spam", Refused, HARD, false, NOQ, SND),
    ("550 5.7.1 This email was rejected because it violates our security policy.", Refused, HARD, false, NOQ, SND),
    ("451 4.4.0 DNS query failed. The error was: DNS query failed with error: ErrorRetry", Unreachable, SOFT, true, NOQ, DOM),
    ("4.4.316 Connection refused [Message=Socket error code 10061]", Unreachable, SOFT, true, NOQ, DOM),
    ("550 5.4.300 Message expired", Unreachable, SOFT, false, NOQ, DOM),

    // ----- Yahoo / AOL -----
    ("421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes", RateLimited, SOFT, true, NOQ, DOM),
    ("421 4.7.0 [TS01] Messages from 192.0.2.1 temporarily deferred due to user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes", RateLimited, SOFT, true, NOQ, DOM),
    ("421 4.7.0 [GL01] Message from (192.0.2.1) temporarily deferred - 4.16.50. Please refer to https://postmaster.yahooinc.com/error-codes", RateLimited, SOFT, true, NOQ, DOM),
    ("421 4.7.0 [TS03] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed. See https://postmaster.yahooinc.com/error-codes", Refused, HARD, false, NOQ, SND),
    ("553 5.7.2 [TSS09] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed. See https://postmaster.yahooinc.com/error-codes", Refused, HARD, false, NOQ, SND),
    ("554 5.7.9 Message not accepted for policy reasons.  See https://postmaster.yahooinc.com/error-codes", Refused, HARD, false, NOQ, SND),
    ("554 delivery error: dd This user doesn't have a yahoo.com account (bob@yahoo.com) [0] - mta1234.mail.bf1.yahoo.com", UserUnknown, HARD, false, IMM, REC),
    ("552 1 Requested mail action aborted, mailbox not found", UserUnknown, HARD, false, IMM, REC),
    ("451 mta1234.mail.bf1.yahoo.com Resources temporarily unavailable. Please try again later [#4.16.1].", RateLimited, SOFT, true, NOQ, DOM),
    ("450 User is receiving mail too quickly", RateLimited, SOFT, true, NOQ, DOM),
    ("421 Max message per connection reached, closing transmission channel", RateLimited, SOFT, true, NOQ, DOM),
    ("554 30 Sorry, your message size exceeds 41943040 bytes.", MessageTooLarge, HARD, false, NOQ, SND),
    ("451 4.3.2 Internal server error", Undefined, SOFT, true, NOQ, REC),
    ("521 5.2.1 :  AOL will not accept delivery of this message.", Refused, HARD, false, NOQ, SND),

    // ----- Apple iCloud -----
    ("550 5.1.1 <bob@icloud.com>: user does not exist", UserUnknown, HARD, false, IMM, REC),
    ("554 5.7.1 [CS01] Message rejected due to local policy. Please visit https://support.apple.com/en-us/HT204137", Refused, HARD, false, NOQ, SND),
    ("421 4.7.1 Messages to bob@icloud.com deferred due to excessive volume. Try again later - https://support.apple.com/en-us/HT204137", RateLimited, SOFT, true, NOQ, DOM),
    ("550 5.7.1 Your message was rejected due to example.com's DMARC policy. See https://support.apple.com/en-us/HT204137", Refused, HARD, false, NOQ, SND),
    ("550 5.7.1 Your email was rejected due to having a domain present in the Spamhaus DBL -- see https://www.spamhaus.org/dbl/", Refused, HARD, false, NOQ, SND),
    ("451 4.7.1 Service unavailable - try again later", RateLimited, SOFT, true, NOQ, DOM),
    ("552 5.2.2 <bob@icloud.com>: user is over quota", MailboxFull, SOFT, true, CNT, REC),

    // ----- Comcast -----
    ("554 resimta-ch2-18v.sys.comcast.net resimta-ch2-18v.sys.comcast.net 192.0.2.1 found on one or more DNSBLs, see http://postmaster.comcast.net/smtp-error-codes.php#BL000010", Refused, HARD, false, NOQ, SND),
    ("550 5.1.1 <bob@comcast.net> Not our Customer", UserUnknown, HARD, false, IMM, REC),
    ("421 Too many sessions opened", RateLimited, SOFT, true, NOQ, DOM),
    ("421 Reverse DNS failure : Try again later", Refused, SOFT, true, NOQ, SND),
    ("450 4.2.0 <bob@comcast.net> - Recipient temporarily unavailable", Undefined, SOFT, true, NOQ, REC),

    // ----- Postfix -----
    ("550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table", UserUnknown, HARD, false, IMM, REC),
    ("550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in local recipient table", UserUnknown, HARD, false, IMM, REC),
    ("550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in relay recipient table", UserUnknown, HARD, false, IMM, REC),
    ("450 4.1.1 <bob@example.com>: Recipient address rejected: unverified address: host mx.example.com[192.0.2.1] said: 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)", UserUnknown, SOFT, true, CNT, REC),
    ("450 4.1.2 <bob@nonexistent.example>: Recipient address rejected: Domain not found", InvalidDomain, SOFT, true, CNT, REC),
    ("554 5.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied", Refused, HARD, false, NOQ, SND),
    ("450 4.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.1]", Refused, SOFT, true, NOQ, SND),
    ("450 4.7.1 <mail.example.com>: Helo command rejected: Host not found", Refused, SOFT, true, NOQ, SND),
    ("504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname", Refused, HARD, false, NOQ, SND),
    ("450 4.1.8 <bounce@sender.example>: Sender address rejected: Domain not found", Refused, SOFT, true, NOQ, SND),
    ("554 5.7.1 <bob@example.com>: Relay access denied", Refused, HARD, false, NOQ, SND),
    ("454 4.7.1 <bob@example.com>: Relay access denied", Refused, SOFT, true, NOQ, SND),
    ("554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.1", Refused, HARD, false, NOQ, SND),
    ("550 5.7.1 Service unavailable; client [192.0.2.1] blocked using bl.spamcop.net", Refused, HARD, false, NOQ, SND),
    ("554 5.7.1 <bob@example.com>: Recipient address rejected: Access denied", Refused, HARD, false, NOQ, SND),
    ("550 Recipient address rejected: Access denied", Refused, HARD, false, NOQ, SND),
    ("552 5.3.4 Message size exceeds fixed limit", MessageTooLarge, HARD, false, NOQ, SND),
    ("552 5.3.4 Error: message file too big", MessageTooLarge, HARD, false, NOQ, SND),
    ("452 4.5.3 Error: too many recipients", RateLimited, SOFT, true, NOQ, DOM),
    ("450 4.2.0 <bob@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html", Greylisted, SOFT, true, NOQ, REC),
    ("451 4.7.1 <bob@example.com>: Recipient address rejected: Greylisted for 5 minutes", Greylisted, SOFT, true, NOQ, REC),
    ("451 4.3.0 <bob@example.com>: Temporary lookup failure", Unreachable, SOFT, true, NOQ, DOM),
    ("452 4.2.2 <bob@example.com>: Recipient address rejected: Mailbox is full", MailboxFull, SOFT, true, CNT, REC),
    ("connect to mx.example.com[192.0.2.1]:25: Connection refused", Unreachable, SOFT, true, NOQ, DOM),
    ("conversation with mx.example.com[192.0.2.1] timed out while receiving the initial server greeting", Unreachable, SOFT, true, NOQ, DOM),
    ("lost connection with mx.example.com[192.0.2.1] while sending RCPT TO", Unreachable, SOFT, true, NOQ, DOM),
    ("Host or domain name not found. Name service error for name=example.invalid type=A: Host not found", InvalidDomain, SOFT, true, CNT, REC),
    ("Host or domain name not found. Name service error for name=example.com type=MX: Host not found, try again", Unreachable, SOFT, true, NOQ, DOM),
    ("Cannot start TLS: handshake failure", Unreachable, SOFT, true, NOQ, DOM),

    // ----- Exim -----
    ("550-Verification failed for <bounce@sender.example>\n550-Unrouteable address\n550 Sender verify failed", Refused, HARD, false, NOQ, SND),
    ("451 Could not complete sender verify callout", Refused, SOFT, true, NOQ, SND),
    ("550 Administrative prohibition", Refused, HARD, false, NOQ, SND),
    ("550 rejected because 192.0.2.1 is in a black list at zen.spamhaus.org", Refused, HARD, false, NOQ, SND),
    ("451 Temporary local problem - please try later", RateLimited, SOFT, true, NOQ, DOM),
    ("550 Unrouteable address", InvalidDomain, SOFT, true, CNT, REC),
    ("552 Message size exceeds maximum permitted", MessageTooLarge, HARD, false, NOQ, SND),
    ("421 Too many concurrent SMTP connections; please try again later.", RateLimited, SOFT, true, NOQ, DOM),
    ("550 Unknown user", UserUnknown, HARD, false, IMM, REC),
    ("452 too many recipients", RateLimited, SOFT, true, NOQ, DOM),

    // ----- Sendmail -----
    ("550 5.1.1 <bob@example.com>... User unknown", UserUnknown, HARD, false, IMM, REC),
    ("553 5.1.8 <bounce@example.invalid>... Domain of sender address bounce@example.invalid does not exist", Refused, HARD, false, NOQ, SND),
    ("550 5.7.1 <bob@example.com>... Relaying denied. IP name lookup failed [192.0.2.1]", Refused, HARD, false, NOQ, SND),
    ("452 4.4.5 Insufficient disk space; try again later", RateLimited, SOFT, true, NOQ, DOM),
    ("554 5.0.0 Service unavailable", Unreachable, SOFT, true, NOQ, DOM),
    ("421 4.3.2 Connection rate limit exceeded.", RateLimited, SOFT, true, NOQ, DOM),
    ("552 <bob@juno.com>... Mail quota exceeded", MailboxFull, SOFT, true, CNT, REC),

    // ----- qmail -----
    ("550 sorry, no mailbox here by that name. (#5.1.1)", UserUnknown, HARD, false, IMM, REC),
    ("553 sorry, that domain isn't in my list of allowed rcpthosts. (#5.7.1)", Refused, HARD, false, NOQ, SND),
    ("552 sorry, that message size exceeds my databytes limit (#5.3.4)", MessageTooLarge, HARD, false, NOQ, SND),
    ("451 qq temporary problem (#4.3.0)", Undefined, SOFT, true, NOQ, REC),
    ("553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)", Refused, HARD, false, NOQ, SND),
    ("451 DNS temporary failure (#4.3.0)", Unreachable, SOFT, true, NOQ, DOM),

    // ----- Mimecast -----
    ("550 Rejected by header based Anti-Spoofing policy: bob@example.com - https://community.mimecast.com/docs/DOC-1369#550 [VUJUo2t1Pr-x_8v9fCw5Og.uk90]", Refused, HARD, false, NOQ, SND),
    ("550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550 [Xk2Pq1ZzKz9tV.uk123]", UserUnknown, HARD, false, IMM, REC),
    ("550 Envelope blocked - User Entry - https://community.mimecast.com/docs/DOC-1369#550", Refused, HARD, false, NOQ, SND),
    ("554 Email rejected due to security policies - https://community.mimecast.com/docs/DOC-1369#554", Refused, HARD, false, NOQ, SND),
    ("451 Internal resource temporarily unavailable - https://community.mimecast.com/docs/DOC-1369#451", Undefined, SOFT, true, NOQ, REC),

    // ----- Cisco IronPort / AT&T / generic -----
    ("554 Your access to this mail system has been rejected due to the sending MTA's poor reputation. If you believe that this failure is in error, please contact the intended recipient via alternate means.", Refused, HARD, false, NOQ, SND),
    ("550 5.2.1 <BOB@PRODIGY.NET>... Addressee unknown, relay=[192.0.2.1]", UserUnknown, HARD, false, IMM, REC),
    ("550 5.2.1 <bob@example.org>... Mailbox unavailable", AccountDisabled, SOFT, false, CNT, REC),
    ("550 5.1.0 Address rejected.", UserUnknown, HARD, false, IMM, REC),

    // ----- Proofpoint -----
    ("554 Blocked - see https://ipcheck.proofpoint.com/?ip=192.0.2.1", Refused, HARD, false, NOQ, SND),
    ("554 5.7.1 Message rejected as spam by Content Filtering.", Refused, HARD, false, NOQ, SND),

    // ----- Barracuda -----
    ("550 permanent failure for one or more recipients (bob@example.com:blocked)", Refused, HARD, false, NOQ, SND),
    ("554 Service unavailable; Client host [192.0.2.1] blocked using Barracuda Reputation; http://www.barracudanetworks.com/reputation/?pr=1&ip=192.0.2.1", Refused, HARD, false, NOQ, SND),
    ("550 cuda_nsu 5.1.1 <bob@example.com>: Recipient address rejected: User unknown", UserUnknown, HARD, false, IMM, REC),
    ("450 cuda_nsu 4.7.1 <bob@example.com>: Recipient address rejected: Policy Rejection- Abuse. Go away.", Refused, SOFT, true, NOQ, SND),

    // ----- Rackspace -----
    ("421 Too many concurrent connections from this client (G2)", RateLimited, SOFT, true, NOQ, DOM),
    ("450 4.7.1 Client host 192.0.2.1 has no PTR record (G1F)", Refused, SOFT, true, NOQ, SND),
    ("451 4.7.1 Received too many messages from a new or untrusted IP (G28)", RateLimited, SOFT, true, NOQ, DOM),
    ("450 4.2.1 <bob@example.com>: Mailbox received too much email in a short period of time (G30)", RateLimited, SOFT, true, NOQ, DOM),

    // ----- Amazon SES / Mailgun -----
    ("554 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: sender@example.com", Refused, HARD, false, NOQ, SND),
    ("454 Throttling failure: Maximum sending rate exceeded.", RateLimited, SOFT, true, NOQ, DOM),
    ("454 Throttling failure: Daily message quota exceeded.", RateLimited, SOFT, true, NOQ, DOM),
    ("Amazon SES did not send the message to this address because it is on the suppression list for your account.", UserUnknown, HARD, false, IMM, REC),
    ("605 Not delivering to previously bounced address", UserUnknown, HARD, false, IMM, REC),

    // ----- Auto-replies (operator input) -----
    ("Automatic reply: Out of Office until Monday", AutoReply, IGN, false, NOQ, REC),
    ("I am currently away from the office with limited access to email", AutoReply, IGN, false, NOQ, REC),

    // ----- Operator one-liners without a basic code -----
    ("5.1.1 user unknown", UserUnknown, HARD, false, IMM, REC),
    ("mailbox full", MailboxFull, SOFT, true, CNT, REC),
    ("something nobody has seen before", Undefined, SOFT, true, NOQ, REC),

    // =====================================================================
    // The hard cases, by category. Each group names where its wording
    // comes from; addresses, IPs and ids are documentation values.
    // =====================================================================

    // ----- Greylisting: one (client, sender, recipient) triplet; retried, never slows the domain -----
    // milter-greylist's default reply.
    ("451 4.7.1 Greylisting in action, please come back in 00:05:00", Greylisted, SOFT, true, NOQ, REC),
    // rspamd's greylist module: "Try again later" under 451 4.7.1.
    ("451 4.7.1 Try again later", Greylisted, SOFT, true, NOQ, REC),
    // Postfix policy servers (postgrey, sqlgrey) when the text names no greylisting.
    ("450 4.7.1 <bob@example.org>: Recipient address rejected: Please try again later", Greylisted, SOFT, true, NOQ, REC),
    // greylistd's Exim ACL example message.
    ("451 192.0.2.1 is not yet authorized to deliver mail from <bounce@sender.example> to <bob@example.org>. Please try later.", Greylisted, SOFT, true, NOQ, REC),

    // ----- Sender-side blocks worded only in text: refused, scope sender -----
    // Postfix smtpd(8): reject_unknown_sender_domain, reject_non_fqdn_sender,
    // reject_unverified_sender, reject_sender_login_mismatch, check_sender_access,
    // reject_rhsbl_sender / reject_rhsbl_helo, check_helo_access.
    ("550 5.1.8 <bounce@sender.example>: Sender address rejected: Domain not found", Refused, HARD, false, NOQ, SND),
    ("504 5.5.2 <bounce>: Sender address rejected: need fully-qualified address", Refused, HARD, false, NOQ, SND),
    ("450 4.1.7 <bounce@sender.example>: Sender address rejected: unverified address: host mx.sender.example[192.0.2.7] said: 550 5.1.1 User unknown (in reply to RCPT TO command)", Refused, SOFT, true, NOQ, SND),
    ("553 5.7.1 <bounce@sender.example>: Sender address rejected: not owned by user mail@example.com", Refused, HARD, false, NOQ, SND),
    ("450 4.1.8 <bounce@sender.example>: Sender address rejected: Malformed DNS server reply", Refused, SOFT, true, NOQ, SND),
    ("554 5.7.1 <bounce@sender.example>: Sender address rejected: Access denied", Refused, HARD, false, NOQ, SND),
    ("554 5.7.1 Service unavailable; Sender address [bounce@sender.example] blocked using dbl.spamhaus.org; https://www.spamhaus.org/query/dbl?domain=sender.example", Refused, HARD, false, NOQ, SND),
    ("554 5.7.1 <mail.sender.example>: Helo command rejected: Access denied", Refused, HARD, false, NOQ, SND),
    ("550 5.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.1]", Refused, HARD, false, NOQ, SND),
    // Exim: smtp_in.c, the default sender-verify and relay messages, a callout answer.
    ("501 <bounce>: sender address must contain a domain", Refused, HARD, false, NOQ, SND),
    ("550 Sender verify failed", Refused, HARD, false, NOQ, SND),
    ("550-Verification failed for <bounce@sender.example>\n550-Called:   192.0.2.7\n550-Sent:     RCPT TO:<bounce@sender.example>\n550-Response: 550 5.1.1 User unknown\n550 Sender verify failed", Refused, HARD, false, NOQ, SND),
    ("550 relay not permitted", Refused, HARD, false, NOQ, SND),
    ("501 Syntactically invalid HELO argument(s)", Refused, HARD, false, NOQ, SND),
    // Sendmail srvrsmtp.c / parseaddr.c and its DNSBL feature's messages.
    ("451 4.1.8 Domain of sender address bounce@sender.example does not resolve", Refused, SOFT, true, NOQ, SND),
    ("553 5.5.4 <bounce>... Domain name required for sender address bounce", Refused, HARD, false, NOQ, SND),
    ("553 5.5.4 <bounce>... Real domain name required for sender address", Refused, HARD, false, NOQ, SND),
    ("550 5.7.1 <bob@example.com>... Relaying denied. Proper authentication required.", Refused, HARD, false, NOQ, SND),
    ("553 5.3.0 <bounce@sender.example>... Spam blocked see: http://spamcop.net/bl.shtml?192.0.2.1", Refused, HARD, false, NOQ, SND),
    ("550 5.7.1 Rejected: 192.0.2.1 listed at zen.spamhaus.org", Refused, HARD, false, NOQ, SND),
    // qmail-smtpd with the MAIL FROM DNS check patch.
    ("553 sorry, your envelope sender domain must exist (#5.7.1)", Refused, HARD, false, NOQ, SND),
    // Haraka plugin mail_from.is_resolvable (DENY and DENYSOFT).
    ("550 No MX for your FROM address", Refused, HARD, false, NOQ, SND),
    ("450 No valid MX for your FROM address", Refused, SOFT, true, NOQ, SND),
    // GMX: the sender domain has no mail host ("invalid DNS MX or A/AAAA").
    ("550-Requested action not taken: mailbox unavailable\n550 invalid DNS MX or A/AAAA resource record", Refused, HARD, false, NOQ, SND),
    // Coremail (NetEase, Sina and many Chinese hosts), its published reply list.
    ("552 mail from invalid.", Refused, HARD, false, NOQ, SND),
    ("553 host denies the sender.", Refused, HARD, false, NOQ, SND),
    ("554 sender is unvalidated.", Refused, HARD, false, NOQ, SND),
    ("556 remote ip check error.", Refused, HARD, false, NOQ, SND),
    ("550 black ip.", Refused, HARD, false, NOQ, SND),
    ("554 Black mail address.", Refused, HARD, false, NOQ, SND),
    ("554 rbl deny.", Refused, HARD, false, NOQ, SND),
    ("554 openrelay check.", Refused, HARD, false, NOQ, SND),
    ("555 helohost error.", Refused, HARD, false, NOQ, SND),
    // Gmail SMTP error reference.
    ("550-5.7.1 [192.0.2.1] The IP you're using to send mail is not authorized to send email directly to our servers. Please use the SMTP relay at your service provider instead. For more information, go to https://support.google.com/mail/?p=NotAuthorizedError", Refused, HARD, false, NOQ, SND),
    ("421-4.7.0 [192.0.2.1] Our system has detected that this message is suspicious due to the very low reputation of the sending domain.", Refused, SOFT, true, NOQ, SND),
    ("550 5.7.1 The user or domain that you are sending to (or from) has a policy that prohibited the mail that you sent.", Refused, HARD, false, NOQ, SND),
    ("550-5.7.1 [192.0.2.1] Our system has detected that this message is not RFC 5322 compliant:\n550-5.7.1 Multiple 'From' headers found. To reduce the amount of spam sent to Gmail,\n550-5.7.1 this message has been blocked. Please visit\n550 5.7.1 https://support.google.com/mail/?p=RfcMessageNonCompliant", Refused, HARD, false, NOQ, SND),
    ("554 5.6.0 Mail message is malformed. Not accepted.", Refused, HARD, false, NOQ, SND),
    ("451 4.5.0 SMTP protocol violation, see RFC 2821.", Refused, SOFT, true, NOQ, SND),
    ("550 5.7.1 Messages missing a valid messageId header are not accepted.", Refused, HARD, false, NOQ, SND),
    // Yandex "Report on non-delivery" help page: SPF of the sender domain.
    ("550 5.7.1 SPF check failed: 192.0.2.1 is not authorized to send in the name of sender.example. (in reply to RCPT TO command)", Refused, HARD, false, NOQ, SND),
    // Microsoft 365: anonymous inbound mail over IPv6; Exchange Online NDR reference.
    ("450 4.7.25 Service unavailable, sending IPv6 address [2001:db8::25] must have reverse DNS record.", Refused, SOFT, true, NOQ, SND),
    ("450 4.7.26 Service unavailable, message sent over IPv6 [2001:db8::25] must pass either SPF or DKIM validation.", Refused, SOFT, true, NOQ, SND),
    ("550 5.7.511 Access denied, banned sender[192.0.2.1]. To request removal from this list please forward this message to delist@microsoft.com.", Refused, HARD, false, NOQ, SND),
    ("550 5.7.750 Service unavailable. Client blocked from sending from unregistered domains.", Refused, HARD, false, NOQ, SND),
    ("550 5.7.23 The message was rejected because of Sender Policy Framework violation", Refused, HARD, false, NOQ, SND),
    ("550 5.7.509 Access denied, sending domain example.com does not pass DMARC verification and has a DMARC policy of reject.", Refused, HARD, false, NOQ, SND),
    ("550 5.7.64 TenantAttribution; Relay Access Denied", Refused, HARD, false, NOQ, SND),
    ("550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication required", Refused, HARD, false, NOQ, SND),
    ("554 5.2.252 SendAsDenied; bounce@sender.example not allowed to send as bob@example.com", Refused, HARD, false, NOQ, SND),
    // Exim: SMTP synchronization and too many protocol errors (our client).
    ("554 SMTP synchronization error", Refused, HARD, false, NOQ, SND),
    ("501 Too many syntax or protocol errors", Refused, HARD, false, NOQ, SND),
    // Postfix smtpd(8): pipelining before the server's reply.
    ("554 5.5.1 Data command rejected: Improper use of SMTP command pipelining", Refused, HARD, false, NOQ, SND),
    // RFC 6531 section 3.7.4.2: a server that refuses a non-ASCII address.
    ("553 5.6.7 Non-ASCII addresses not permitted for that recipient", Unreachable, HARD, false, NOQ, REC),
    ("550 5.6.7 Non-ASCII addresses not permitted for that sender", Unreachable, HARD, false, NOQ, REC),
    // RFC 6531's code under RFC 5321's generic 553 text.
    ("553 5.6.7 Requested action not taken: mailbox name not allowed", Unreachable, HARD, false, NOQ, REC),
    // Postfix smtp_proto.c: SMTPUTF8 required and not offered (its DSN text).
    ("5.6.7 SMTPUTF8 is required, but was not offered by host mx.example.com[192.0.2.1]", Unreachable, HARD, false, NOQ, REC),
    // mailpipe's own deferrals when the server lacks SMTPUTF8 (a non-ASCII
    // address) or 8BITMIME (our 8-bit message: sender scope, like Sendmail's
    // 5.6.3 below): nothing was sent, the message waits.
    ("4.6.7 the server does not offer SMTPUTF8, which a non-ASCII address needs (RFC 6531); deferred until a server that offers it takes it", Unreachable, SOFT, true, NOQ, REC),
    ("4.6.3 the server does not offer 8BITMIME, which the message's 8-bit data needs; deferred until a server that offers it takes it", Refused, SOFT, true, NOQ, SND),
    // Exim and other MTAs word it in text under a generic code.
    ("550 UTF-8 addresses are not permitted here", Unreachable, HARD, false, NOQ, REC),
    // Sendmail deliver.c: 8-bit data towards a 7-bit destination.
    ("554 5.6.3 Cannot send 8-bit data to 7-bit destination", Refused, HARD, false, NOQ, SND),
    // Haraka plugin headers (RFC 5322 section 3.6 checks).
    ("550 Only one From header allowed. See RFC 5322, Section 3.6", Refused, HARD, false, NOQ, SND),
    ("550 Required header 'Date' missing", Refused, HARD, false, NOQ, SND),
    ("550 The Date header is too far in the future", Refused, HARD, false, NOQ, SND),
    // NetEase (163.com) help_spam_16 codes that name the sending side.
    ("554 DT:SPM 163 mx14,QMCowEDp_CbB8FJfKj3hBQ--.19932S2 1682150082,please see http://mail.163.com/help/help_spam_16.htm?ip=192.0.2.1&hostid=mx14&time=1682150082", Refused, HARD, false, NOQ, SND),
    ("451 DT:SPM 163 mx14,QMCowEDp_CbB8FJfKj3hBQ--.19932S2 1682150082, please try again", Refused, SOFT, true, NOQ, SND),
    ("450 DT:RBL 163 mx3,QMCowECbCRJm8-BbXh3hBQ--.1234S2 1682150082", Refused, SOFT, true, NOQ, SND),
    ("554 HL:IHU 163 mx3,QMCowECbCRJm8-BbXh3hBQ--.1234S2 1682150082", Refused, HARD, false, NOQ, SND),
    ("421 HL:REP 163 mx3,QMCowECbCRJm8-BbXh3hBQ--.1234S2 1682150082", Refused, SOFT, true, NOQ, SND),
    ("550 MI:SPF 163 mx14,QMCowECbCRJm8-BbXh3hBQ--.1234S2 1682150082", Refused, HARD, false, NOQ, SND),
    // Orange / Wanadoo postmaster codes.
    ("550 5.7.1 Mail rejected by Orange (OFR_999) : 192.0.2.1 [OFR004_104]", Refused, HARD, false, NOQ, SND),
    ("550 mwinf5c62 ME Adresse IP source bloquee pour incident de spam. Client host blocked for spamming issues. OFR006_102 Ref http://csi.cloudmark.com", Refused, HARD, false, NOQ, SND),
    ("550 5.7.1 Service refuse. Veuillez essayer plus tard. Service refused, please try later. OFR006_101 [101]", Refused, HARD, false, NOQ, SND),
    // Deutsche Telekom (T-Online) postmaster: IP blocklist.
    ("554 IP=192.0.2.1 - A problem occurred. (Ask your postmaster for help or to contact tosa@rx.t-online.de to clarify.) (BL)", Refused, HARD, false, NOQ, SND),
    // GMX / WEB.DE postmaster: the "Nemesis" greeting blocks.
    ("554-mx.gmx.net (mxgmx015) Nemesis ESMTP Service not available\n554-No SMTP service\n554-Bad DNS PTR resource record.\n554 For explanation visit https://postmaster.gmx.net/en/case?c=r0701&i=ip&v=192.0.2.1&r=1MTh2C-1nTBh83MYG-00UJfd", Refused, HARD, false, NOQ, SND),
    ("554-Transaction failed\n554-Reject due to policy restrictions.\n554 For explanation visit https://web.de/email/senderguidelines?ip=192.0.2.1&c=hi", Refused, HARD, false, NOQ, SND),
    // Mail.ru help (notspam-support) and Yandex help: spam verdicts.
    ("550 spam message rejected. Please visit http://help.mail.ru/notspam-support/id?c=Ab12Cd34 or report details to abuse@corp.mail.ru. Error code: 0123456789ABCDEF. ID: 00000000000000000000000000000000.", Refused, HARD, false, NOQ, SND),
    ("550 Message rejected under suspicion of SPAM; https://ya.cc/1IrBc 1682150082-AbCdEfGh", Refused, HARD, false, NOQ, SND),
    // QQ Mail (exmail.qq.com help 20022 and 16).
    ("550 Mail content denied. http://service.exmail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000726", Refused, HARD, false, NOQ, SND),
    ("550 Suspected spam sender.", Refused, HARD, false, NOQ, SND),
    ("550 DMARC check failed. http://service.mail.qq.com/cgi-bin/help?subtype=1&&no=1001508&&id=16", Refused, HARD, false, NOQ, SND),
    // Yahoo postmaster error codes.
    ("553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.1, because the ip is in Spamhaus's list; see https://postmaster.yahooinc.com/error-codes", Refused, HARD, false, NOQ, SND),
    ("550 5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo requires all senders to authenticate with either SPF or DKIM.", Refused, HARD, false, NOQ, SND),
    // Comcast, iCloud, Trend Micro, Mimecast, Zoho references.
    ("554 resimta-ch2-18v.sys.comcast.net comcast 192.0.2.1 Comcast block for spam.  Please see http://postmaster.comcast.net/smtp-error-codes.php#BL000000", Refused, HARD, false, NOQ, SND),
    ("550 5.7.1 Message rejected due to local policy. Please visit https://support.apple.com/en-us/HT204137", Refused, HARD, false, NOQ, SND),
    ("550 5.7.1 Service unavailable; client [192.0.2.1] blocked using Trend Micro RBL+. Please see http://www.mail-abuse.com/cgi-bin/lookup?ip_address=192.0.2.1", Refused, HARD, false, NOQ, SND),
    ("550 Rejected by header based Blocked Senders - block policy for Header From - https://community.mimecast.com/docs/DOC-1369#550", Refused, HARD, false, NOQ, SND),
    ("550 Anti-Spoofing policy - Inbound not allowed - https://community.mimecast.com/docs/DOC-1369#550", Refused, HARD, false, NOQ, SND),
    ("451 Open relay not allowed - https://community.mimecast.com/docs/DOC-1369#451", Refused, SOFT, true, NOQ, SND),
    ("553 Relaying disallowed as bounce@sender.example", Refused, HARD, false, NOQ, SND),

    // ----- Trouble on the receiving side under a 5xx: unreachable, retried -----
    // Sendmail: configuration errors and hop counts.
    ("553 5.3.5 mx.example.net. config error: mail loops back to me (MX problem?)", Unreachable, SOFT, true, NOQ, DOM),
    ("554 5.3.5 Local configuration error", Unreachable, SOFT, true, NOQ, DOM),
    ("554 5.4.6 Too many hops 26 (25 max): from <bounce@sender.example> via mx.example.net, to <bob@example.net>", Unreachable, SOFT, true, NOQ, DOM),
    // Postfix: loops and hop counts.
    ("550 5.4.6 mail for example.net loops back to myself", Unreachable, SOFT, true, NOQ, DOM),
    ("554 5.4.0 Error: too many hops", Unreachable, SOFT, true, NOQ, DOM),
    ("mail forwarding loop for bob@example.net", Unreachable, SOFT, true, NOQ, DOM),
    // Exim: loop detection by the number of Received headers.
    ("550 Too many \"Received\" headers - suspected mail loop", Unreachable, SOFT, true, NOQ, DOM),
    // qmail-smtpd and qmail-send.
    ("554 too many hops, this message is looping (#5.4.6)", Unreachable, SOFT, true, NOQ, DOM),
    ("554 This message is looping: it already has my Delivered-To line. (#5.4.6)", Unreachable, SOFT, true, NOQ, DOM),
    ("554 Sorry. Although I'm listed as a best-preference MX or A for that host, it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)", Unreachable, SOFT, true, NOQ, DOM),
    // Coremail published reply list.
    ("552 looping message.", Unreachable, SOFT, true, NOQ, DOM),
    // RFC 3463 5.3.x mail system status, with the RFC's texts.
    ("554 5.3.0 Other or undefined mail system status", Unreachable, SOFT, true, NOQ, DOM),
    ("552 5.3.1 Mail system full", Unreachable, SOFT, true, NOQ, DOM),
    ("554 5.3.2 System not accepting network messages", Unreachable, SOFT, true, NOQ, DOM),
    ("554 5.3.3 System not capable of selected features", Unreachable, SOFT, true, NOQ, DOM),
    ("554 5.3.5 System incorrectly configured", Unreachable, SOFT, true, NOQ, DOM),
    // Exchange Online NDR reference.
    ("554 5.4.14 Hop count exceeded - possible mail loop ATTR34", Unreachable, SOFT, true, NOQ, DOM),
    ("550 5.4.316 Message expired, connection refused(Socket error code 10061)", Unreachable, SOFT, true, NOQ, DOM),
    ("554 5.6.0 STOREDRV.Deliver; Corrupt message content", Undefined, HARD, false, NOQ, SND),
    ("550 5.6.211 Invalid MIME Content: Single text value size (32775) exceeded allowed maximum (32768)", Undefined, HARD, false, NOQ, SND),
    // Exim: the DNS lookup of the recipient's host did not complete.
    ("host lookup did not complete", Unreachable, SOFT, true, NOQ, DOM),
    // Sendmail and qmail-remote: the remote side did not answer.
    ("451 4.4.1 reply: read error from mx.example.net.", Unreachable, SOFT, true, NOQ, DOM),
    ("Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)", Unreachable, SOFT, true, NOQ, DOM),

    // ----- Invalid-domain wordings, with or without codes -----
    // qmail-remote: no host by that name.
    ("Sorry, I couldn't find any host named example.invalid. (#5.1.2)", InvalidDomain, SOFT, true, CNT, REC),
    ("Sorry, I couldn't find any host by that name. (#4.1.2)", InvalidDomain, SOFT, true, CNT, REC),
    // Sendmail: host unknown from the name server.
    ("550 5.1.2 <bob@example.invalid>... Host unknown (Name server: example.invalid: host not found)", InvalidDomain, SOFT, true, CNT, REC),
    // Exim: no usable MX; Exim's "Unrouteable address" for a domain that does not route.
    ("550 all relevant MX records point to non-existent hosts", InvalidDomain, SOFT, true, CNT, REC),
    // Yandex help page ("DNS: no such domain"); Postfix's DNS texts.
    ("DNS: no such domain", InvalidDomain, SOFT, true, CNT, REC),
    ("Host or domain name not found. Name service error for name=example.invalid type=MX: Host not found", InvalidDomain, SOFT, true, CNT, REC),
    ("550 5.1.2 <bob@example.invalid>: Recipient address rejected: Domain not found", InvalidDomain, SOFT, true, CNT, REC),
    // Microsoft Exchange: DNS answered without a mail host, or in a loop.
    ("550 5.4.310 DNS domain example.invalid does not exist [Message=InfoDomainNonexistent] [LastAttemptedServerName=example.invalid]", InvalidDomain, SOFT, true, CNT, REC),
    ("554 5.4.4 SMTPSEND.DNS.MxLoopback; DNS records for this domain are configured in a loop", InvalidDomain, SOFT, true, CNT, REC),
    // Gmail's bounce texts, which carry no reply code: "DNS Error: ...".
    ("DNS Error: Domain name not found", InvalidDomain, SOFT, true, CNT, REC),
    ("DNS Error: DNS type 'mx' lookup of example.invalid responded with code NXDOMAIN Domain name not found: example.invalid", InvalidDomain, SOFT, true, CNT, REC),
    ("DNS Error: DNS server returned answer with no data", InvalidDomain, SOFT, true, CNT, REC),
    ("DNS Error: DNS type 'mx' lookup of example.com responded with code SERVFAIL", Unreachable, SOFT, true, NOQ, DOM),

    // ----- User-unknown wordings without codes -----
    // Chinese hosting providers' bounce guides (emailhost.com.cn) and NetEase.
    ("550 user not exist", UserUnknown, HARD, false, IMM, REC),
    ("550 User not found: bob@163.com", UserUnknown, HARD, false, IMM, REC),
    // Mail.ru "Message was not accepted -- invalid mailbox".
    ("550 Message was not accepted -- invalid mailbox.  Local mailbox bob@mail.ru is unavailable: user not found", UserUnknown, HARD, false, IMM, REC),
    // Yandex help pages and Yandex's reply.
    ("550 5.7.1 No such user!", UserUnknown, HARD, false, IMM, REC),
    ("No correct recipients", UserUnknown, HARD, false, IMM, REC),
    ("Bad recipient address syntax", UserUnknown, HARD, false, IMM, REC),
    // Postfix smtpd(8): recipient syntax, no valid recipients; local(8).
    ("501 5.1.3 Bad recipient address syntax", UserUnknown, HARD, false, IMM, REC),
    ("504 5.5.2 <bob>: Recipient address rejected: need fully-qualified address", UserUnknown, HARD, false, IMM, REC),
    ("554 5.5.1 Error: no valid recipients", UserUnknown, HARD, false, IMM, REC),
    ("unknown user: \"bob\"", UserUnknown, HARD, false, IMM, REC),
    // Sendmail parseaddr.c.
    ("553 5.1.3 <bob@@example.com>... User address required", UserUnknown, HARD, false, IMM, REC),
    ("501 5.1.3 Invalid address", UserUnknown, HARD, false, IMM, REC),
    // QQ Mail help 20022.
    ("550 Mailbox not found. http://service.exmail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000728", UserUnknown, HARD, false, IMM, REC),
    // Barracuda, AT&T, Yahoo, Zoho, Cisco references.
    ("550 No such user (bob@example.com)", UserUnknown, HARD, false, IMM, REC),
    ("550 5.2.1 <bob@prodigy.net>... blank mailhost - invalid address, relay=[192.0.2.1]", UserUnknown, HARD, false, IMM, REC),
    ("554 delivery error: dd Not a valid recipient - atlas117.free.mail.ne1.yahoo.com", UserUnknown, HARD, false, IMM, REC),
    ("550 5.1.1 User does not exist - <bob@zoho.com>", UserUnknown, HARD, false, IMM, REC),
    ("550 #5.1.0 Address rejected bob@example.com", UserUnknown, HARD, false, IMM, REC),
    // Lotus Domino's delivery failure report.
    ("User bob (bob@example.com) not listed in Domino Directory", UserUnknown, HARD, false, IMM, REC),
    // qmail chkuser; qmail's dot-qmail(5) bouncesaying example.
    ("511 sorry, no mailbox here by that name (#5.1.1 - chkuser)", UserUnknown, HARD, false, IMM, REC),
    ("This address no longer accepts mail.", UserUnknown, HARD, false, IMM, REC),
    // Orange: invalid recipient (French and English).
    ("550 5.1.1 Adresse d au moins un destinataire invalide. Invalid recipient. OFR_416", UserUnknown, HARD, false, IMM, REC),

    // ----- Account disabled wordings -----
    // Yandex help: the recipient's account is blocked ("Policy rejection on the target address").
    ("550 5.7.1 Policy rejection on the target address", AccountDisabled, SOFT, false, CNT, REC),
    // Mail.ru: disabled and terminated mailboxes.
    ("550 Message was not accepted -- invalid mailbox.  Local mailbox bob@mail.ru is unavailable: account is disabled", AccountDisabled, SOFT, false, CNT, REC),
    ("550 Message was not accepted -- invalid mailbox.  Local mailbox bob@mail.ru is unavailable: user is terminated", AccountDisabled, SOFT, false, CNT, REC),
    // Coremail: "user is locked".
    ("550 user is locked.", AccountDisabled, SOFT, false, CNT, REC),
    // Yahoo "dd" codes.
    ("554 delivery error: dd Sorry your message to bob@yahoo.com cannot be delivered. This account has been disabled or discontinued [#102]. - mta1234.mail.bf1.yahoo.com", AccountDisabled, SOFT, false, CNT, REC),
    ("554 delivery error: dd Sorry, your message to bob@ymail.com cannot be delivered. This mailbox is disabled (554.30). - mta1234.mail.bf1.yahoo.com", AccountDisabled, SOFT, false, CNT, REC),
    // Gmail SMTP error reference; iCloud.
    ("550 5.2.1 The email account that you tried to reach is inactive.", AccountDisabled, SOFT, false, CNT, REC),
    ("550 5.1.1 <bob@icloud.com>: inactive email address", AccountDisabled, SOFT, false, CNT, REC),

    // ----- Rate limiting, also under a 5xx: retried, the domain slows down -----
    // QQ Mail help 20022: frequency limits per IP, connection, domain, sender.
    ("550 Ip frequency limited. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000725", RateLimited, SOFT, true, NOQ, DOM),
    ("550 Connection frequency limited.", RateLimited, SOFT, true, NOQ, DOM),
    ("550 Domain frequency limited.", RateLimited, SOFT, true, NOQ, DOM),
    ("550 Sender frequency limited. http://service.exmail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000723", RateLimited, SOFT, true, NOQ, DOM),
    // NetEase (163.com) volume codes.
    ("421 HL:ICC 163 mx3,QMCowECbCRJm8-BbXh3hBQ--.1234S2 1682150082", RateLimited, SOFT, true, NOQ, DOM),
    ("421 HL:IFC 163 mx3,QMCowECbCRJm8-BbXh3hBQ--.1234S2 1682150082", RateLimited, SOFT, true, NOQ, DOM),
    ("554 HL:IFQ 163 mx3,QMCowECbCRJm8-BbXh3hBQ--.1234S2 1682150082", RateLimited, SOFT, true, NOQ, DOM),
    ("451 MI:SFQ 163 mx3,QMCowECbCRJm8-BbXh3hBQ--.1234S2 1682150082", RateLimited, SOFT, true, NOQ, DOM),
    ("550 RP:TRC 163 mx3,QMCowECbCRJm8-BbXh3hBQ--.1234S2 1682150082", RateLimited, SOFT, true, NOQ, DOM),
    ("450 MI:DMC 163 mx3,QMCowECbCRJm8-BbXh3hBQ--.1234S2 1682150082", RateLimited, SOFT, true, NOQ, DOM),
    // Postfix smtpd(8) with anvil(8) limits.
    ("421 4.7.0 mx.example.net Error: too many connections from 192.0.2.1", RateLimited, SOFT, true, NOQ, DOM),
    ("450 4.7.1 Error: too much mail from 192.0.2.1", RateLimited, SOFT, true, NOQ, DOM),
    ("450 4.7.1 Error: too many recipients from 192.0.2.1", RateLimited, SOFT, true, NOQ, DOM),
    ("421 4.7.0 mx.example.net Error: too many errors", RateLimited, SOFT, true, NOQ, DOM),
    // Orange: too many connections (OFR005).
    ("421 mwinf5c05 ME Trop de connexions, veuillez verifier votre configuration. Too many connections, slow down. OFR005_104 [104]", RateLimited, SOFT, true, NOQ, DOM),
    // Gmail, Cisco, Yahoo, Mail.ru, Yandex, iCloud.
    ("452 4.5.3 Your message has too many recipients.", RateLimited, SOFT, true, NOQ, DOM),
    ("452 Too many recipients received this hour", RateLimited, SOFT, true, NOQ, DOM),
    ("451 Message temporarily deferred - [160]", RateLimited, SOFT, true, NOQ, DOM),
    ("451 Ratelimit exceeded for mailbox bob@mail.ru. Try again later.", RateLimited, SOFT, true, NOQ, DOM),
    ("451 4.7.1 Sorry, the service is currently unavailable. Please come back later.", RateLimited, SOFT, true, NOQ, DOM),

    // ----- More whole-mail diagnostics (Gmail, Yandex, Mimecast, Microsoft) -----
    ("552 5.2.2 The email account that you tried to reach is over quota and inactive.", MailboxFull, SOFT, true, CNT, REC),
    ("552 5.2.2 Mailbox size limit exceeded", MailboxFull, SOFT, true, CNT, REC),
    ("550 5.2.2 STOREDRV.Deliver: mailbox full", MailboxFull, SOFT, true, CNT, REC),
    ("554 Maximum email size exceeded - https://community.mimecast.com/docs/DOC-1369#554", MessageTooLarge, HARD, false, NOQ, SND),
    ("502 5.5.1 Unrecognized command.", Undefined, SOFT, false, NOQ, SND),
    ("555 5.5.2 Syntax error.", Undefined, SOFT, false, NOQ, SND),

    // ----- Connection failures -----
    ("conn:refused:Connection refused (os error 111)", Unreachable, SOFT, true, NOQ, DOM),
    ("conn:timeout:connection timed out after 30s", Unreachable, SOFT, true, NOQ, DOM),
    ("conn:tls:invalid peer certificate: UnknownIssuer", Unreachable, SOFT, true, NOQ, DOM),
    ("conn:dns:example.com has a null MX record (RFC 7505)", InvalidDomain, HARD, false, IMM, REC),
    ("conn:dns:failed to lookup address information: Temporary failure in name resolution", Unreachable, SOFT, true, NOQ, DOM),
    ("conn:dns:no record found for Query { name: Name(\"example.invalid.\"), query_type: MX }: NXDomain", InvalidDomain, SOFT, true, CNT, REC),
    ("conn:dns:resolver error", Unreachable, SOFT, true, NOQ, DOM),
    ("conn:disconnected:connection closed by peer during DATA", Unreachable, SOFT, true, NOQ, DOM),
    ("conn:other:unexpected response: garbage", Undefined, SOFT, true, NOQ, DOM),
];

/// Corpus rows the default rules leave to the fallback (reported as "to qualify").
const TO_QUALIFY: &[&str] = &[
    "450 Requested mail action not taken: mailbox unavailable",
    "451 Requested action aborted: local error in processing",
    "452 Requested action not taken: insufficient system storage",
    "452 4.3.1 Mail system full",
    "451 4.3.2 Internal server error",
    "450 4.2.0 <bob@comcast.net> - Recipient temporarily unavailable",
    "451 qq temporary problem (#4.3.0)",
    "451 Internal resource temporarily unavailable - https://community.mimecast.com/docs/DOC-1369#451",
    "something nobody has seen before",
];

fn failure(input: &str) -> Failure {
    match input.strip_prefix("conn:") {
        Some(rest) => {
            let (kind, detail) = rest.split_once(':').unwrap_or((rest, ""));
            let error = ConnectionError::ALL
                .into_iter()
                .find(|e| e.as_str() == kind)
                .unwrap_or_else(|| panic!("unknown connection kind in corpus: {kind}"));
            Failure::connection(error, detail)
        }
        None => Failure::from_reply_text(input),
    }
}

#[test]
fn corpus_is_classified_as_expected() {
    let classifier = Classifier::default();
    let mut failures = Vec::new();
    for &(input, reason, kind, retry, quarantine, scope) in CORPUS {
        let got = classifier.classify(&failure(input));
        let want = (reason, kind, retry, quarantine, scope);
        let have = (got.reason, got.kind, got.retry, got.quarantine, got.scope);
        if have != want {
            failures.push(format!(
                "{input}\n    want {want:?}\n    got  {have:?} (rule {:?})",
                got.rule
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows misclassified:\n{}",
        failures.len(),
        CORPUS.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_has_at_least_350_real_world_rows() {
    // 224 rows before the hard cases (sender-side texts, server trouble
    // under 5xx, localized and provider codes, greylisting) were added.
    assert!(CORPUS.len() >= 374, "{} rows", CORPUS.len());
    let inputs: BTreeSet<&str> = CORPUS.iter().map(|r| r.0).collect();
    assert_eq!(inputs.len(), CORPUS.len(), "duplicate corpus rows");
}

#[test]
fn every_reason_appears_in_the_corpus() {
    let seen: BTreeSet<&str> = CORPUS.iter().map(|r| r.1.as_str()).collect();
    for reason in Reason::ALL {
        assert!(seen.contains(reason.as_str()), "no corpus row for {reason}");
    }
}

#[test]
fn every_default_rule_is_exercised_by_the_corpus() {
    let classifier = Classifier::default();
    let matched: BTreeSet<String> = CORPUS
        .iter()
        .filter_map(|r| classifier.classify(&failure(r.0)).rule)
        .collect();
    let unexercised: Vec<&str> = classifier
        .rule_names()
        .filter(|name| !matched.contains(*name))
        .collect();
    assert!(
        unexercised.is_empty(),
        "default rules never matched by the corpus: {unexercised:?}"
    );
}

#[test]
fn every_connection_error_kind_appears_in_the_corpus() {
    for kind in ConnectionError::ALL {
        let prefix = format!("conn:{}:", kind.as_str());
        assert!(
            CORPUS.iter().any(|r| r.0.starts_with(&prefix)),
            "no corpus row for connection {kind}"
        );
    }
}

#[test]
fn unknown_text_falls_back_on_basic_code_and_has_no_rule() {
    let classifier = Classifier::default();
    for input in TO_QUALIFY {
        let got = classifier.classify(&failure(input));
        assert_eq!(got.rule, None, "{input}");
        assert_eq!(got.reason, Reason::Undefined, "{input}");
    }
    let got = classifier.classify(&failure("451 something new"));
    assert_eq!(
        (got.kind, got.retry, got.quarantine, got.scope, got.rule),
        (SOFT, true, NOQ, REC, None)
    );
    let got = classifier.classify(&failure("550 something new"));
    assert_eq!(
        (got.kind, got.retry, got.quarantine, got.scope, got.rule),
        (SOFT, false, CNT, REC, None)
    );
    // Exactly the rows listed as "to qualify" are left to the fallback.
    let fallback_rows: BTreeSet<&str> = CORPUS
        .iter()
        .map(|r| r.0)
        .filter(|input| classifier.classify(&failure(input)).rule.is_none())
        .collect();
    let listed: BTreeSet<&str> = TO_QUALIFY.iter().copied().collect();
    assert_eq!(fallback_rows, listed);
}

#[test]
fn hard_bounce_is_not_retried() {
    let classifier = Classifier::default();
    for r in CORPUS {
        let got = classifier.classify(&failure(r.0));
        if got.kind == FailureType::Hard {
            assert!(!got.retry, "hard but retried: {}", r.0);
        }
        if got.reason == Reason::UserUnknown && got.kind == FailureType::Hard {
            assert_eq!(got.quarantine, Quarantine::Immediate, "{}", r.0);
        }
    }
}

#[test]
fn refused_never_quarantines_the_recipient() {
    let classifier = Classifier::default();
    let mut refused = 0;
    for r in CORPUS {
        let got = classifier.classify(&failure(r.0));
        if matches!(got.reason, Reason::Refused | Reason::MessageTooLarge) {
            refused += 1;
            assert_eq!(got.quarantine, Quarantine::None, "{}", r.0);
            assert_eq!(got.scope, Scope::Sender, "{}", r.0);
        }
    }
    assert!(refused > 30);
    // Transient refusals are retried, permanent ones are not.
    let got = classifier.classify(&failure("454 4.7.1 <bob@example.com>: Relay access denied"));
    assert!(got.retry && got.kind == FailureType::Soft);
    let got = classifier.classify(&failure("554 5.7.1 <bob@example.com>: Relay access denied"));
    assert!(!got.retry && got.kind == FailureType::Hard);
}

#[test]
fn enhanced_code_outranks_basic_digit_for_quota() {
    let classifier = Classifier::default();
    let full = classifier.classify(&failure(
        "552 5.2.2 <bob@example.com>... Requested mail action aborted",
    ));
    assert_eq!(
        (full.reason, full.kind, full.retry, full.quarantine),
        (MailboxFull, SOFT, true, CNT)
    );
    let quota = classifier.classify(&failure("550 5.4.5 Daily user sending quota exceeded."));
    assert_eq!(
        (quota.reason, quota.kind, quota.retry),
        (RateLimited, SOFT, true)
    );
    // A transient enhanced code under a permanent basic code is transient.
    let t = classifier.classify(&failure("550 4.2.2 Mailbox over quota"));
    assert_eq!((t.reason, t.retry), (MailboxFull, true));
    let t = classifier.classify(&failure("550 4.1.1 <bob@example.com>: User unknown"));
    assert_eq!(
        (t.reason, t.kind, t.retry, t.quarantine),
        (UserUnknown, SOFT, true, CNT)
    );
}

#[test]
fn normalized_corpus_is_stable() {
    for r in CORPUS {
        let once = normalize(r.0);
        assert_eq!(normalize(&once), once, "{}", r.0);
        assert!(!once.contains('@'), "address left in {once}");
    }
}

#[test]
fn greylisting_never_slows_the_domain_down_and_throttling_does() {
    let classifier = Classifier::default();
    // (reply, counts toward the domain's breaker, slows the domain down)
    let table: &[(&str, bool, bool)] = &[
        ("451 4.7.1 Greylisted, please try again later", false, false),
        ("451 4.7.1 Greylisting in action, please come back in 00:05:00", false, false),
        ("450 4.2.0 <bob@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html", false, false),
        ("451 4.7.1 Try again later", false, false),
        ("421 4.7.0 Try again later, closing connection. (EHLO) - gsmtp", true, true),
        ("450 4.2.1 The user you are trying to contact is receiving mail too quickly. Please resend your message at a later time.", true, true),
        ("550 Ip frequency limited. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000725", true, true),
        ("451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.", true, true),
        ("554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", true, false),
        ("554 5.3.5 Local configuration error", true, false),
        ("550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown", false, false),
        ("552 5.2.2 Mailbox full", false, false),
    ];
    for &(reply, breaker, slows) in table {
        let class = classifier.classify(&failure(reply));
        let effect = class.domain_effect();
        assert_eq!(
            (effect.counts_toward_breaker, effect.slows_down),
            (breaker, slows),
            "{reply} ({:?}, rule {:?})",
            class.reason,
            class.rule
        );
    }
}

#[test]
fn unclassified_5xx_naming_the_sending_side_is_not_counted_against_the_recipient() {
    let classifier = Classifier::default();
    // Replies no rule knows, written the way receivers name the client: an
    // IP address, "your server", "mail from", an IPv6 literal.
    for reply in [
        "550 Message from 192.0.2.1 rejected",
        "554 Your server 192.0.2.1 cannot deliver here",
        "550 Not accepting mail from sender.example",
        "553 Connection from [2001:db8::25] cannot be accepted",
    ] {
        let got = classifier.classify(&failure(reply));
        assert_eq!(
            (got.reason, got.quarantine, got.scope, got.rule.as_deref()),
            (Undefined, NOQ, SND, None),
            "{reply}"
        );
        assert!(!got.retry, "{reply}");
    }
    // An address other than the recipient's counts when the recipient is known.
    let reply = failure("550 bounce@mail.example is not welcome here");
    let got = classifier.classify(&reply);
    assert_eq!((got.quarantine, got.scope), (CNT, REC));
    let got = classifier.classify_for(&reply, Some("bob@example.com"));
    assert_eq!((got.quarantine, got.scope, got.rule), (NOQ, SND, None));
    let got = classifier.classify_for(
        &failure("550 bob@example.com is not welcome here"),
        Some("bob@example.com"),
    );
    assert_eq!((got.quarantine, got.scope), (CNT, REC));
    // The rest stays "to qualify" and counts, as before.
    let got = classifier.classify(&failure("550 something new"));
    assert_eq!((got.quarantine, got.scope, got.rule), (CNT, REC, None));
}
